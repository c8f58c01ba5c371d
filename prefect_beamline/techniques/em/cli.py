"""`prefect-beamline watch`: the cryo-EM technique's command-line extra."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _watch(args: argparse.Namespace) -> int:
    from prefect_beamline.runs import parse_assignment
    from prefect_beamline.settings import get_settings
    from prefect_beamline.techniques.em.watch import FolderWatcher, WatchConfig

    settings = get_settings()
    token = args.token or (
        settings.gateway_token.get_secret_value() if settings.gateway_token else None
    )
    parameters = dict(parse_assignment(text) for text in args.set or [])
    config = WatchConfig(
        directory=args.directory.resolve(),
        collection_id=args.collection_id,
        beamline=args.beamline,
        visit=args.visit,
        gateway_url=args.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}",
        token=token,
        settle_s=args.settle,
        poll_s=args.poll,
        recursive=args.recursive,
        processing_parameters=parameters,
    )
    count = FolderWatcher(config).run(args.duration)
    print(f"announced {count} movie(s)")
    return 0


def add_commands(commands: Any) -> None:
    """Add `watch` to the CLI's subcommands."""
    watch = commands.add_parser(
        "watch", help="announce each new movie of a folder (microscopes that only write files)"
    )
    watch.add_argument("directory", type=Path, help="folder the microscope writes movies to")
    watch.add_argument("--collection-id", type=int, required=True, help="LIMS dataCollectionId")
    watch.add_argument("--beamline", required=True, help="microscope / beamline name, e.g. m02")
    watch.add_argument("--visit", required=True, help="visit, e.g. bi23047-1")
    watch.add_argument("--set", action="append", metavar="KEY=VALUE", help="processing parameter")
    watch.add_argument("--gateway-url", default=None, help="gateway (default: from settings)")
    watch.add_argument("--token", default=None, help="gateway token (default: from settings)")
    watch.add_argument("--settle", type=float, default=5.0, help="seconds a size must hold")
    watch.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    watch.add_argument("--recursive", action="store_true", help="watch sub-folders too")
    watch.add_argument("--duration", type=float, default=None, help="stop after seconds")
    watch.set_defaults(handler=_watch)
