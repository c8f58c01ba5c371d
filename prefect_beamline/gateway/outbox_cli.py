"""`prefect-beamline outbox list|show|requeue|discard`: the operator's dead-letter tools.

`list` pages (`--limit`, `--after`) and always says when more events exist; `--json`
prints one object (`events`, `more`, `next_after`) for scripts. `requeue` makes dead
letters (or any named event) pending again with fresh attempts; `discard` deletes dead
letters only, by id or `--all`.
"""

from __future__ import annotations

import argparse
import json
import sys

from prefect_beamline.gateway.outbox import StoredEvent
from prefect_beamline.gateway.server import (
    outbox_discard,
    outbox_list,
    outbox_requeue,
    outbox_show,
)

ERROR_COLUMN_CHARS = 60


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 done, 1 event not found, 2 bad arguments."""
    if args.action == "list":
        return _list(args)
    if args.action == "show":
        row = outbox_show(args.event_id)
        if row is None:
            print(f"no event {args.event_id!r} in the outbox", file=sys.stderr)
            return 1
        print(json.dumps(row, indent=2))
        return 0
    event_ids = None if args.all else args.event_id
    if args.action == "requeue":
        print(f"requeued {outbox_requeue(event_ids)} event(s)")
    else:
        print(f"discarded {outbox_discard(event_ids)} event(s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        page = outbox_list(args.status, args.limit, args.after)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if args.json:
        document = {
            "events": [row.as_dict() for row in page.rows],
            "more": page.more,
            "next_after": page.next_after,
        }
        print(json.dumps(document))
        return 0
    for row in page.rows:
        print(_line(row))
    if page.more:
        print(f"... more events: add --after {page.next_after}")
    elif not page.rows:
        print("no events")
    return 0


def _line(row: StoredEvent) -> str:
    error = (row.last_error or "").replace("\n", " ")
    if len(error) > ERROR_COLUMN_CHARS:
        error = error[: ERROR_COLUMN_CHARS - 3] + "..."
    retry = f" retry {row.next_attempt_at:%H:%M:%S}" if row.next_attempt_at else ""
    return (
        f"{row.sequence:>8}  {row.status:8} {row.event_id:30} dc{row.collection_id} "
        f"attempts={row.attempts}{retry} {error}".rstrip()
    )
