"""`prefect-beamline`: the command line of facility software engineers."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from prefect_beamline.techniques import registry

if TYPE_CHECKING:
    from prefect_beamline.lims import Lims
    from prefect_beamline.lims.collections import CollectionDescription


class UsageError(Exception):
    """A command cannot do what was asked (bad argument, unknown name, unreachable
    service): one line on stderr and exit status 2, not a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (sub-commands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _assignment(text: str) -> tuple[str, Any]:
    """`--set key=value`, checked when the command line is parsed."""
    from prefect_beamline.runs import parse_assignment

    try:
        return parse_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _demo(args: argparse.Namespace) -> int:
    from prefect_beamline.shared_server import ServerInUse, ServerUnreachable
    from prefect_beamline.techniques import technique

    try:
        module = technique(args.technique).module("demo")
    except LookupError as error:
        print(error.args[0], file=sys.stderr)
        return 2
    options: dict[str, object] = {}
    if args.images is not None:
        options["n_images"] = args.images
    if args.grid:
        options["grid"] = True
    try:
        report = module.run_demo(args.workdir, **options)
    except TypeError as error:
        print(f"demo {args.technique}: {error}", file=sys.stderr)
        return 2
    except (ServerInUse, ServerUnreachable) as error:
        raise UsageError(str(error)) from error
    if args.json:
        print(json.dumps(report, default=str))
    else:
        module.print_report(report)
    return 0 if report["state"] == "COMPLETED" else 1


def _gateway(args: argparse.Namespace) -> int:
    from prefect_beamline.gateway.auth import GatewayConfigError
    from prefect_beamline.gateway.server import run_gateway
    from prefect_beamline.settings import get_settings

    settings = get_settings()
    try:
        run_gateway(
            args.host or settings.gateway_host, args.port or settings.gateway_port, settings
        )
    except GatewayConfigError as error:
        print(f"prefect-beamline gateway: {error}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace) -> int:
    from prefect_beamline.serving import serve

    serve(args.prefect_file, args.deployment, limit=args.limit, poll_seconds=args.poll_seconds)
    return 0


def _recover(args: argparse.Namespace) -> int:
    """Crash recovery without serving, beside `prefect deploy` and workers."""
    import contextlib
    import threading

    from prefect_beamline.deployments import selected_specs
    from prefect_beamline.serving import start_crash_recovery

    start_crash_recovery(selected_specs(args.prefect_file, args.deployment))
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from prefect.cli import app

    from prefect_beamline.worker import WORKER_TYPE

    command = ["worker", "start", "--pool", args.pool, "--type", WORKER_TYPE]
    if args.name:
        command += ["--name", args.name]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    for queue in args.work_queue or []:
        command += ["--work-queue", queue]
    sys.argv = ["prefect", *command]
    app()  # Prefect's own `prefect worker start`, in this process
    return 0


def _rerun(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from prefect_beamline.deployments import deployment_for_collection
    from prefect_beamline.lims import Lims
    from prefect_beamline.runs import (
        TERMINAL_STATES,
        qualified_deployment_name,
        start_rerun,
        wait_for_state,
    )

    overrides = dict(args.set or [])
    deployment = args.deployment
    if deployment is None:
        collection = _lims_collection(Lims.from_settings(), args.collection_id)
        if collection is None:
            raise UsageError(f"data collection {args.collection_id} is not in the LIMS")
        deployment = deployment_for_collection(collection.technique, collection.experiment_type)
    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise UsageError("PREFECT_API_URL is not set: point it at the Prefect server's API")
    _check_prefect_api(api_url)
    flow_and_deployment = qualified_deployment_name(api_url, deployment)
    if args.form:
        print(_prefilled_form(api_url, flow_and_deployment, args.collection_id, overrides))
        return 0
    run = start_rerun(api_url, flow_and_deployment, args.collection_id, overrides, args.as_user)
    print(f"started {run.name} ({run.id}) of {flow_and_deployment} changing {overrides}")
    if args.wait:
        final = wait_for_state(api_url, run.id, TERMINAL_STATES, args.timeout)
        print(f"{final.name}: {final.state}")
        return 0 if final.state == "COMPLETED" else 1
    return 0


def _prefilled_form(
    api_url: str, flow_and_deployment: str, collection_id: int, overrides: dict[str, Any]
) -> str:
    """The UI's run form of the deployment, filled in with the collection's latest values
    (and `overrides`): a scientist changes what they mean and submits."""
    from prefect_beamline.flows.rerun import latest_job_parameters, rerun_form_url
    from prefect_beamline.lims import Lims
    from prefect_beamline.runs import deployment_id, science_fields

    recipe = flow_and_deployment.split("/")[-1]
    latest = latest_job_parameters(Lims.from_settings(), collection_id, recipe, {})
    fields = science_fields(api_url, flow_and_deployment)
    values = {k: v for k, v in (latest[1] if latest else {}).items() if k in fields}
    ui_url = api_url.removesuffix("/api")
    return rerun_form_url(
        ui_url, deployment_id(api_url, flow_and_deployment), collection_id, {**values, **overrides}
    )


def _lims_collection(lims: Lims, collection_id: int) -> CollectionDescription | None:
    """The LIMS's DataCollection `collection_id` (None if absent); a LIMS that cannot be
    read (wrong URL, no tables) is a UsageError naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    from prefect_beamline.lims.engine import display_url

    try:
        return lims.get_collection(collection_id)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise UsageError(
            f"cannot read the LIMS at {display_url(lims.url)} ({reason}); "
            "is PREFECT_BEAMLINE_LIMS_URL right?"
        ) from error


def _check_prefect_api(api_url: str) -> None:
    """Fail with one line when the Prefect API does not answer."""
    import httpx

    try:
        httpx.get(f"{api_url}/health", timeout=10.0).raise_for_status()
    except httpx.HTTPError as error:
        raise UsageError(
            f"cannot reach the Prefect API at {api_url} ({error}); "
            "is the server up and PREFECT_API_URL right?"
        ) from error


def _outbox(args: argparse.Namespace) -> int:
    from prefect_beamline.gateway import outbox_cli

    return outbox_cli.run(args)


def _add_outbox_commands(outbox: argparse.ArgumentParser) -> None:
    actions = outbox.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="stored events, oldest first, a page at a time")
    listing.add_argument(
        "--status", default=None, help="pending, emitted, failed (dead letters) or skipped"
    )
    listing.add_argument("--limit", type=int, default=100, help="events per page (default 100)")
    listing.add_argument(
        "--after", type=int, default=0, help="start after this sequence (the next page)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    show = actions.add_parser("show", help="everything stored about one event, raw body too")
    show.add_argument("event_id")
    for name, what in (("requeue", "send again"), ("discard", "delete")):
        action = actions.add_parser(name, help=f"{what} dead letters (failed events)")
        chosen = action.add_mutually_exclusive_group(required=name == "discard")
        chosen.add_argument("--event-id", action="append", help=f"event to {what} (repeatable)")
        chosen.add_argument("--all", action="store_true", help=f"{what} every failed event")


def _prefect_file(args: argparse.Namespace) -> int:
    from prefect_beamline.deployments import find_prefect_yaml

    print(find_prefect_yaml())
    return 0


def _techniques(args: argparse.Namespace) -> int:
    from prefect_beamline.deployments import deployments_of

    for spec in registry().values():
        names = ", ".join(deployment.name for deployment in deployments_of(spec.name))
        print(f"{spec.name:8} {spec.title}  (deployments: {names})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from prefect_beamline.about import version_text

    parser = _Parser(
        prog="prefect-beamline",
        description="Automated data analysis for synchrotron and cryo-EM facilities on Prefect.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run one synthetic collection through the whole path")
    demo.add_argument(
        "technique",
        nargs="?",
        default="mx",
        help=f"technique to demonstrate ({', '.join(registry())})",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--grid", action="store_true", help="a grid scan instead of a rotation")
    demo.add_argument(
        "--images", type=_positive_int, default=None, help="images (projections, movies) to write"
    )
    demo.add_argument("--workdir", type=Path, default=None, help="folder for data and state")
    demo.set_defaults(handler=_demo)

    gateway = commands.add_parser("gateway", help="run the DAQ webhook gateway")
    gateway.add_argument(
        "--host", default=None, help="bind address (PREFECT_BEAMLINE_GATEWAY_HOST)"
    )
    gateway.add_argument(
        "--port", type=int, default=None, help="port (PREFECT_BEAMLINE_GATEWAY_PORT)"
    )
    gateway.set_defaults(handler=_gateway)

    bridge = commands.add_parser(
        "zocalo-bridge",
        help="consume Zocalo's processing_recipe queue on RabbitMQ (dodal, zocalo.go)",
    )
    bridge.set_defaults(handler=_zocalo_bridge)

    serve = commands.add_parser("serve", help="serve the deployments of prefect.yaml with triggers")
    serve.add_argument("--prefect-file", type=Path, default=None, help="path of prefect.yaml")
    serve.add_argument("--deployment", action="append", help="serve only this deployment")
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    serve.add_argument(
        "--poll-seconds", type=float, default=0.25, help="how often to look for new runs"
    )
    serve.set_defaults(handler=_serve)

    recover = commands.add_parser(
        "recover", help="crash recovery for `prefect deploy` installs (serve does it itself)"
    )
    recover.add_argument("--prefect-file", type=Path, default=None, help="path of prefect.yaml")
    recover.add_argument("--deployment", action="append", help="only this deployment's runs")
    recover.set_defaults(handler=_recover)

    worker = commands.add_parser(
        "worker", help="run flow runs of a work pool warm (`prefect worker start --type beamline`)"
    )
    worker.add_argument("--pool", required=True, help="work pool to take flow runs from")
    worker.add_argument("--name", default=None, help="worker name shown in the UI")
    worker.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    worker.add_argument("--work-queue", action="append", help="only this work queue")
    worker.set_defaults(handler=_worker)

    rerun = commands.add_parser("rerun", help="rerun a collection with changed parameters")
    rerun.add_argument("collection_id", type=int, help="LIMS dataCollectionId")
    rerun.add_argument(
        "--set", action="append", type=_assignment, metavar="KEY=VALUE", help="parameter to change"
    )
    rerun.add_argument("--deployment", default=None, help="deployment (default: from the LIMS)")
    rerun.add_argument("--wait", action="store_true", help="wait for the run to finish")
    rerun.add_argument(
        "--as",
        dest="as_user",
        default=None,
        metavar="NAME",
        help="who asks for the rerun, as the LIMS records it (default: your user name)",
    )
    rerun.add_argument(
        "--form",
        action="store_true",
        help="print the Prefect UI's run form filled in with the collection's latest "
        "values (and any --set) instead of starting a run",
    )
    rerun.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    rerun.set_defaults(handler=_rerun)

    outbox = commands.add_parser("outbox", help="inspect, requeue or discard outbox events")
    _add_outbox_commands(outbox)
    outbox.set_defaults(handler=_outbox)

    prefect_file = commands.add_parser(
        "prefect-file",
        help="print the path of the prefect.yaml in use (./prefect.yaml, else the package's)",
    )
    prefect_file.set_defaults(handler=_prefect_file)

    techniques = commands.add_parser("techniques", help="list the installed techniques")
    techniques.set_defaults(handler=_techniques)
    for spec in registry().values():
        if spec.cli:
            module, _, function = spec.cli.partition(":")
            getattr(importlib.import_module(module), function)(commands)
    return parser


def _zocalo_bridge(args: argparse.Namespace) -> int:
    from prefect_beamline.zocalo.service import run_bridge

    run_bridge()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        return int(args.handler(args))
    except (UsageError, LookupError, ValueError, FileNotFoundError) as error:
        # Misuse (a name that does not exist, a file that is not there, a value out of
        # range) is the caller's to fix: say what, on one line.
        only_text = len(error.args) == 1 and isinstance(error.args[0], str)
        message = " ".join((error.args[0] if only_text else str(error)).split())
        print(f"prefect-beamline {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
