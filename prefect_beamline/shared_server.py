"""Running the embedded stack's `serve` against a Prefect server others use.

`serve` registers every deployment of prefect.yaml under its own name, replacing a
facility's deployment of that name (its work pool, parameters, schedule), and its
triggers start runs on the same collection events as the facility's automations. So on
a server the stack did not start, it first checks that nothing of the kind is there,
refuses with a message naming what it found, and removes what it registered when it
stops.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx

from prefect_beamline.events import EVENT_PREFIX


class ServerInUse(RuntimeError):
    """The server already has deployments or automations the stack would clash with."""


class ServerUnreachable(RuntimeError):
    """PREFECT_API_URL names a server that does not answer."""


def ensure_reachable(api_url: str, timeout_s: float = 10.0) -> None:
    """Return once the server answers its health check; ServerUnreachable after
    `timeout_s` (a server someone else runs is up already, or it is the wrong address)."""
    deadline = time.monotonic() + timeout_s
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{api_url}/health", timeout=2.0)
            if response.status_code == 200:
                return
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            problem = str(error) or type(error).__name__
        time.sleep(0.5)
    raise ServerUnreachable(
        f"cannot reach the Prefect API at {api_url} ({problem}); unset PREFECT_API_URL to "
        "run on a server of its own, or start that server"
    )


def _post(api_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{api_url}{path}", json=body, timeout=10.0)
    response.raise_for_status()
    return list(response.json())


def _expected_events(trigger: dict[str, Any]) -> list[str]:
    """Event names a trigger waits for, compound and sequence triggers included."""
    names = list(trigger.get("expect") or [])
    for inner in trigger.get("triggers") or []:
        names += _expected_events(inner)
    return names


def clashes(api_url: str, deployment_names: list[str]) -> list[str]:
    """What on the server `serve` would replace or compete with: deployments of these
    names, and automations started by collection events."""
    found = [
        f"deployment {deployment['name']!r}"
        for deployment in _post(
            api_url, "/deployments/filter", {"deployments": {"name": {"any_": deployment_names}}}
        )
    ]
    for automation in _post(api_url, "/automations/filter", {}):
        if any(name.startswith(EVENT_PREFIX) for name in _expected_events(automation["trigger"])):
            found.append(f"automation {automation['name']!r}")
    return found


def ensure_unclaimed(api_url: str, deployment_names: list[str]) -> None:
    """Raise ServerInUse, naming what is there, if serving would touch others' work."""
    found = clashes(api_url, deployment_names)
    if found:
        raise ServerInUse(
            f"the Prefect server at {api_url} already has {', '.join(found)}; the demo "
            "would replace those deployments and its events would start those automations. "
            "Unset PREFECT_API_URL to run it on a server of its own"
        )


def remove_deployments(api_url: str, deployment_names: list[str]) -> None:
    """Delete these deployments and the automations that start them (Prefect leaves a
    deleted deployment's trigger automations behind)."""
    deployments = _post(
        api_url, "/deployments/filter", {"deployments": {"name": {"any_": deployment_names}}}
    )
    for deployment in deployments:
        related = httpx.get(
            f"{api_url}/automations/related-to/prefect.deployment.{deployment['id']}",
            timeout=10.0,
        )
        for automation in related.json() if related.status_code == 200 else []:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{api_url}/automations/{automation['id']}", timeout=10.0)
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{api_url}/deployments/{deployment['id']}", timeout=10.0)
