"""`prefect-beamline`: the command line of facility software engineers."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from prefect_beamline.techniques import registry


def _demo(args: argparse.Namespace) -> int:
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
    if args.json:
        print(json.dumps(report, default=str))
    else:
        module.print_report(report)
    return 0 if report["state"] == "COMPLETED" else 1


def _gateway(args: argparse.Namespace) -> int:
    from prefect_beamline.gateway.server import run_gateway
    from prefect_beamline.settings import get_settings

    settings = get_settings()
    run_gateway(args.host or settings.gateway_host, args.port or settings.gateway_port, settings)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from prefect_beamline.serving import serve

    serve(args.prefect_file, args.deployment, limit=args.limit, poll_seconds=args.poll_seconds)
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
        parse_assignment,
        qualified_deployment_name,
        start_rerun,
        wait_for_state,
    )

    overrides = dict(parse_assignment(text) for text in args.set or [])
    deployment = args.deployment
    if deployment is None:
        collection = Lims.from_settings().get_collection(args.collection_id)
        if collection is None:
            print(f"data collection {args.collection_id} is not in the LIMS", file=sys.stderr)
            return 2
        try:
            deployment = deployment_for_collection(collection.technique, collection.experiment_type)
        except LookupError as error:
            print(error, file=sys.stderr)
            return 2
    api_url = str(PREFECT_API_URL.value())
    try:
        flow_and_deployment = qualified_deployment_name(api_url, deployment)
    except LookupError as error:
        print(error, file=sys.stderr)
        return 2
    run = start_rerun(api_url, flow_and_deployment, args.collection_id, overrides)
    print(f"started {run.name} ({run.id}) of {flow_and_deployment} with {overrides}")
    if args.wait:
        final = wait_for_state(api_url, run.id, TERMINAL_STATES, args.timeout)
        print(f"{final.name}: {final.state}")
        return 0 if final.state == "COMPLETED" else 1
    return 0


def _outbox(args: argparse.Namespace) -> int:
    from prefect_beamline.gateway.server import outbox_list, outbox_requeue

    if args.action == "list":
        try:
            rows = outbox_list(args.status)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    count = outbox_requeue(args.event_id or None)
    print(f"requeued {count} event(s)")
    return 0


def _techniques(args: argparse.Namespace) -> int:
    from prefect_beamline.deployments import deployments_of

    for spec in registry().values():
        names = ", ".join(deployment.name for deployment in deployments_of(spec.name))
        print(f"{spec.name:8} {spec.title}  (deployments: {names})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-beamline",
        description="Automated data analysis for synchrotron and cryo-EM facilities on Prefect.",
    )
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
        "--images", type=int, default=None, help="images (projections, movies) to write"
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

    serve = commands.add_parser("serve", help="serve the deployments of prefect.yaml with triggers")
    serve.add_argument("--prefect-file", type=Path, default=None, help="path of prefect.yaml")
    serve.add_argument("--deployment", action="append", help="serve only this deployment")
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    serve.add_argument(
        "--poll-seconds", type=float, default=0.25, help="how often to look for new runs"
    )
    serve.set_defaults(handler=_serve)

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
    rerun.add_argument("--set", action="append", metavar="KEY=VALUE", help="parameter to change")
    rerun.add_argument("--deployment", default=None, help="deployment (default: from the LIMS)")
    rerun.add_argument("--wait", action="store_true", help="wait for the run to finish")
    rerun.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    rerun.set_defaults(handler=_rerun)

    outbox = commands.add_parser("outbox", help="inspect or re-inject the gateway's outbox")
    outbox.add_argument("action", choices=["list", "requeue"])
    outbox.add_argument("--status", default=None, help="pending, emitted or failed")
    outbox.add_argument("--event-id", action="append", help="event to requeue (default: failed)")
    outbox.set_defaults(handler=_outbox)

    techniques = commands.add_parser("techniques", help="list the installed techniques")
    techniques.set_defaults(handler=_techniques)
    for spec in registry().values():
        if spec.cli:
            module, _, function = spec.cli.partition(":")
            getattr(importlib.import_module(module), function)(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
