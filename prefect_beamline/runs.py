"""Finding, starting and waiting for flow runs through the Prefect REST API.

Plain HTTP against `PREFECT_API_URL`, so the demo, the CLI and the tests can watch a
server other processes talk to without sharing their Prefect settings.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class FlowRunInfo:
    """What the demo and the tests need to know about one flow run."""

    id: str
    name: str
    state: str
    parameters: dict[str, Any]
    start_time: str | None
    created: str | None


def _info(run: dict[str, Any]) -> FlowRunInfo:
    return FlowRunInfo(
        id=run["id"],
        name=run["name"],
        state=run["state_type"] or "PENDING",
        parameters=run.get("parameters") or {},
        start_time=run.get("start_time"),
        created=run.get("created"),
    )


def deployment_id(api_url: str, deployment: str) -> str:
    """Id of a deployment named `flow-name/deployment-name` or just `deployment-name`."""
    if "/" in deployment:
        response = httpx.get(f"{api_url}/deployments/name/{deployment}", timeout=10.0)
        if response.status_code == 404:
            raise LookupError(f"deployment {deployment!r} is not registered at {api_url}")
        response.raise_for_status()
        return str(response.json()["id"])
    response = httpx.post(
        f"{api_url}/deployments/filter",
        json={"deployments": {"name": {"any_": [deployment]}}},
        timeout=10.0,
    )
    response.raise_for_status()
    found = response.json()
    if len(found) != 1:
        raise LookupError(
            f"{len(found)} deployments are named {deployment!r} at {api_url}; "
            "name it as flow-name/deployment-name"
        )
    return str(found[0]["id"])


def flow_runs_for_collection(
    api_url: str, flow_and_deployment: str, collection_id: int
) -> list[FlowRunInfo]:
    """Flow runs of a deployment whose `collection_id` parameter is this collection."""
    body = {
        "deployments": {"id": {"any_": [deployment_id(api_url, flow_and_deployment)]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 200,
    }
    response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10.0)
    response.raise_for_status()
    runs = [_info(run) for run in response.json()]
    return [r for r in runs if str(r.parameters.get("collection_id")) == str(collection_id)]


def read_flow_run(api_url: str, flow_run_id: str) -> FlowRunInfo:
    response = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10.0)
    response.raise_for_status()
    return _info(response.json())


def wait_for_new_flow_run(
    api_url: str,
    flow_and_deployment: str,
    collection_id: int,
    known: set[str],
    timeout_s: float,
) -> FlowRunInfo:
    """The first flow run for the collection that is not in `known`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in flow_runs_for_collection(api_url, flow_and_deployment, collection_id):
            if run.id not in known:
                return run
        time.sleep(0.1)
    raise TimeoutError(
        f"no flow run of {flow_and_deployment} for collection {collection_id} "
        f"appeared within {timeout_s:.0f} s"
    )


def wait_for_state(
    api_url: str, flow_run_id: str, states: set[str], timeout_s: float, poll_s: float = 0.1
) -> FlowRunInfo:
    """Poll the flow run until its state type is one of `states`."""
    deadline = time.monotonic() + timeout_s
    run = read_flow_run(api_url, flow_run_id)
    while run.state not in states and time.monotonic() < deadline:
        time.sleep(poll_s)
        run = read_flow_run(api_url, flow_run_id)
    if run.state not in states:
        raise TimeoutError(
            f"flow run {flow_run_id} still {run.state} after {timeout_s:.0f} s "
            f"(waiting for {sorted(states)})"
        )
    return run


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is JSON when it parses, else text."""
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"expected key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def start_rerun(
    api_url: str,
    flow_and_deployment: str,
    collection_id: int,
    overrides: dict[str, Any],
    who: str | None = None,
) -> FlowRunInfo:
    """Create a manual flow run of a deployment for one collection with changed parameters.

    Only the overrides are sent: the flow takes every other value from the collection's
    latest job (DAQ values included), records the run as manual, by `who` (default: the
    invoking user), and what it changed.
    """
    body = {
        "parameters": {
            "collection_id": collection_id,
            "parameters": as_the_form_types(api_url, flow_and_deployment, overrides),
            "triggered_by": f"cli:{who or getpass.getuser()}",
        },
        "tags": ["rerun"],
        # A server on SQLite answers 503 while its database is locked: retrying with the
        # same key creates the run once even if an earlier attempt got through.
        "idempotency_key": f"rerun-{uuid.uuid4()}",
    }
    url = f"{api_url}/deployments/{deployment_id(api_url, flow_and_deployment)}/create_flow_run"
    for attempt in range(5):
        response = httpx.post(url, json=body, timeout=10.0)
        if response.status_code < 500:
            break
        time.sleep(0.5 * 2**attempt)
    if response.status_code >= 400:
        raise RuntimeError(f"Prefect refused the rerun ({response.status_code}): {response.text}")
    return _info(response.json())


def qualified_deployment_name(api_url: str, deployment: str) -> str:
    """`flow-name/deployment-name` for a deployment named either way."""
    response = httpx.get(
        f"{api_url}/deployments/{deployment_id(api_url, deployment)}", timeout=10.0
    )
    response.raise_for_status()
    found = response.json()
    flow = httpx.get(f"{api_url}/flows/{found['flow_id']}", timeout=10.0)
    flow.raise_for_status()
    return f"{flow.json()['name']}/{found['name']}"


def science_fields(api_url: str, deployment: str) -> set[str]:
    """Names of the fields of a deployment's `parameters` form (its settings model)."""
    return set(_science_schema(api_url, deployment))


def _science_schema(api_url: str, deployment: str) -> dict[str, Any]:
    """Each field of a deployment's `parameters` form and its JSON schema."""
    response = httpx.get(
        f"{api_url}/deployments/{deployment_id(api_url, deployment)}", timeout=10.0
    )
    response.raise_for_status()
    schema = response.json().get("parameter_openapi_schema") or {}
    reference = schema.get("properties", {}).get("parameters", {}).get("$ref", "")
    model = (schema.get("definitions") or {}).get(reference.rsplit("/", 1)[-1], {})
    return dict(model.get("properties", {}))


def as_the_form_types(api_url: str, deployment: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """`--set` values as the deployment's form types them: `probe_from=54` parses as a
    number, and the server would refuse it for a text field (the flow reads it as text)."""
    fields = _science_schema(api_url, deployment)
    return {
        key: str(value)
        if fields.get(key, {}).get("type") == "string" and isinstance(value, int | float)
        else value
        for key, value in overrides.items()
    }
