"""What the end-to-end tests of every technique share: announce a collection as the DAQ
does (a technique's own `demo_event`, through `prefect_beamline.demo.post_event`), follow
the run it starts, rerun it from the CLI, and read what the stack stored."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from prefect_beamline.demo import post_event
from prefect_beamline.events import COMPLETED_EVENT, RESOURCE_PREFIX, CollectionEvent
from prefect_beamline.live.daq_client import follow_results
from prefect_beamline.live.swmr import replay_with_swmr
from prefect_beamline.runs import (
    TERMINAL_STATES,
    FlowRunInfo,
    wait_for_new_flow_run,
    wait_for_state,
)
from prefect_beamline.stack import LocalStack, cli

RUN_TIMEOUT_S = 180.0
_collection_ids = itertools.count(1001)


def next_collection_id() -> int:
    """A collection id no other end-to-end test of this session has used (they all share
    the session's stack and its LIMS)."""
    return next(_collection_ids)


def announce(
    stack: LocalStack, event: CollectionEvent, **processing_parameters: object
) -> CollectionEvent:
    """POST `event` to the gateway with these processing parameters added; the event sent."""
    if processing_parameters:
        event = event.model_copy(
            update={
                "processing_parameters": {**event.processing_parameters, **processing_parameters}
            }
        )
    post_event(stack, event)
    return event


def final_run(
    stack: LocalStack, deployment: str, collection_id: int, timeout_s: float = RUN_TIMEOUT_S
) -> FlowRunInfo:
    """The collection's first run of `deployment`, once it has reached a final state."""
    run = wait_for_new_flow_run(stack.api_url, deployment, collection_id, set(), timeout_s)
    return wait_for_state(stack.api_url, run.id, TERMINAL_STATES, timeout_s)


def completed_run(stack: LocalStack, deployment: str, collection_id: int) -> str:
    """The id of the collection's first run of `deployment`, which must complete."""
    final = final_run(stack, deployment, collection_id)
    assert final.state == "COMPLETED", stack.logs()
    return final.id


def cli_rerun(
    stack: LocalStack, collection_id: int, *changes: str, timeout_s: float = RUN_TIMEOUT_S
) -> str:
    """`prefect-beamline rerun <collection> --set <change>... --wait`, as an engineer types
    it; it must succeed. Its output."""
    done = subprocess.run(
        cli(
            "rerun",
            str(collection_id),
            *(argument for change in changes for argument in ("--set", change)),
            "--wait",
            "--timeout",
            f"{timeout_s:.0f}",
        ),
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
    )
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    return done.stdout


def completed_events(stack: LocalStack, collection_id: int) -> list[dict[str, Any]]:
    """The collection's processing-completed events Prefect has stored (its persister
    writes in batches: poll a while)."""
    body = {
        "filter": {
            "event": {"name": [COMPLETED_EVENT]},
            "resource": {"id": [f"{RESOURCE_PREFIX}.{collection_id}"]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + 30.0
    while True:
        response = httpx.post(f"{stack.api_url}/events/filter", json=body, timeout=10.0)
        response.raise_for_status()
        events = list(response.json()["events"])
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def artifacts(stack: LocalStack, keys: list[str]) -> list[dict[str, Any]]:
    """The artifacts with these keys, every one of which must exist."""
    response = httpx.post(
        f"{stack.api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": keys}}},
        timeout=10.0,
    )
    response.raise_for_status()
    found = list(response.json())
    assert {a["key"] for a in found} == set(keys)
    return found


# How long the live tests wait for a collection's results stream to end.
LIVE_TIMEOUT_S = 120.0


def configure_live(stack: LocalStack, beamline: str, config: dict[str, Any]) -> None:
    """Add `beamline` to the server's `beamline-live` Variable (what a facility sets)."""
    url = f"{stack.api_url}/variables/name/beamline-live"
    found = httpx.get(url, timeout=10.0)
    value = found.json()["value"] if found.status_code == 200 else {}
    value[beamline] = config
    if found.status_code == 200:
        httpx.patch(url, json={"value": value}, timeout=10.0).raise_for_status()
    else:
        body = {"name": "beamline-live", "value": value}
        httpx.post(f"{stack.api_url}/variables/", json=body, timeout=10.0).raise_for_status()


class DaqFollower(threading.Thread):
    """The DAQ following the results stream, recording what came and when."""

    def __init__(self, stack: LocalStack, collection_id: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.collection_id = stack, collection_id
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for message in follow_results(
                self.stack.gateway_url,
                self.collection_id,
                self.stack.gateway_token,
                timeout_s=LIVE_TIMEOUT_S,
            ):
                self.messages.append(message)
        except BaseException as error:  # reported by the test
            self.error = error

    def finish(self) -> list[dict[str, Any]]:
        self.join(LIVE_TIMEOUT_S)
        assert self.error is None and not self.is_alive(), self.error
        return self.messages


def follow_while_written_with_swmr(
    stack: LocalStack, event: CollectionEvent, source_master: Path, rate_hz: float
) -> list[dict[str, Any]]:
    """A live collection from the DAQ's side: the detector writes `source_master`'s frames
    with SWMR where `event` (a `started` event) says, at `rate_hz`; once the master is
    there the DAQ follows the results stream and posts `event`. Every message it got."""
    master = Path(event.data_files[0])
    writer = threading.Thread(
        target=replay_with_swmr, args=(source_master, master.parent), kwargs={"rate_hz": rate_hz}
    )
    writer.start()
    while not master.is_file():
        time.sleep(0.01)
    follower = DaqFollower(stack, event.collection_id)
    follower.start()
    post_event(stack, event)
    writer.join()
    return follower.finish()
