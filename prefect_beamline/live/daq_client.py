"""What a DAQ runs to follow a collection's live results on the gateway (SSE).

    for message in follow_results(gateway_url, collection_id, token):
        if message["type"] == "centre":
            move_to(message["centre"])            # the grid scan's X-ray centre

Reconnects after a dropped connection with `Last-Event-ID`, so no message is missed;
returns after the collection's `end` message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from prefect_beamline.gateway.live_results import LIVE_PREFIX


def follow_results(
    gateway_url: str,
    collection_id: int,
    token: str | None,
    *,
    timeout_s: float = 600.0,
    reconnect_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Each message of the collection's results stream, in order, until `end`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last_id = 0
    deadline = time.monotonic() + timeout_s
    url = f"{gateway_url.rstrip('/')}{LIVE_PREFIX}/{collection_id}/stream"
    while time.monotonic() < deadline:
        try:
            with httpx.stream(
                "GET",
                url,
                headers={**headers, "Last-Event-ID": str(last_id)},
                timeout=httpx.Timeout(10.0, read=60.0),
            ) as response:
                if response.status_code in (401, 403):
                    raise PermissionError(f"{url}: {response.status_code} {response.read()!r}")
                response.raise_for_status()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line:
                        if not line.startswith(":") and ": " in line:
                            key, value = line.split(": ", 1)
                            fields[key] = value
                        continue
                    if "data" in fields:
                        last_id = int(fields.get("id", last_id))
                        message = json.loads(fields["data"])
                        yield message
                        if message.get("type") == "end":
                            return
                    fields = {}
        except (httpx.TransportError, httpx.RemoteProtocolError):
            time.sleep(reconnect_s)
    raise TimeoutError(f"{url}: no end message within {timeout_s} s")
