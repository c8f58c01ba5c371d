"""What every technique's demo shares: the DAQ's webhook, and waiting for the run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from prefect_beamline.events import CollectionEvent
from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack

RUN_TIMEOUT_S = 300.0


def post_event(stack: LocalStack, event: CollectionEvent) -> dict[str, Any]:
    """POST the announcement to the gateway as a DAQ does; raise on anything but 202."""
    response = httpx.post(
        f"{stack.gateway_url}/api/v1/collections",
        content=event.model_dump_json(),
        headers={
            "Authorization": f"Bearer {stack.gateway_token}",
            "Content-Type": "application/json",
        },
        timeout=10.0,
    )
    if response.status_code != 202:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text}")
    return dict(response.json())


@dataclass(frozen=True)
class DemoRun:
    """The automation-started flow run of one announcement, once it has finished."""

    flow_run_id: str
    state: str
    accepted: dict[str, Any]
    webhook_to_running_s: float


def announce_and_wait(
    stack: LocalStack,
    event: CollectionEvent,
    deployment: str,
    timeout_s: float = RUN_TIMEOUT_S,
) -> DemoRun:
    """POST `event`, then follow the run of `deployment` it starts to a final state."""
    posted_at = time.monotonic()
    accepted = post_event(stack, event)
    run = wait_for_new_flow_run(stack.api_url, deployment, event.collection_id, set(), timeout_s)
    running = wait_for_state(
        stack.api_url, run.id, {"RUNNING", *TERMINAL_STATES}, timeout_s, poll_s=0.05
    )
    webhook_to_running_s = time.monotonic() - posted_at
    final = wait_for_state(stack.api_url, running.id, TERMINAL_STATES, timeout_s)
    return DemoRun(final.id, final.state, accepted, round(webhook_to_running_s, 3))
