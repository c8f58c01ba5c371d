"""Bodies at every limit the gateway enforces are accepted and reach a real Prefect
server's event store (Prefect answers 204 even for events it then loses, so only the
event store can tell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from fastapi.testclient import TestClient

from prefect_beamline.events import LIMS_INTEGER_MAX
from prefect_beamline.gateway.emittable import MAX_DEPTH
from prefect_beamline.gateway.server import create_app
from tests.gateway.test_app import TOKEN, event_body, make_settings, no_lookup, stored
from tests.gateway.test_emittable import START, nested
from tests.gateway.test_emittable_property import (
    BOUNDED,
    bluesky_starts,
    collection_bodies,
    describe_any,
    zocalo_messages,
)
from tests.gateway.test_prefect import PrefectServer, all_emitted, wait_for

pytestmark = pytest.mark.e2e

REAL_SERVER_EXAMPLES = 40  # per endpoint
LARGEST_NOTE = 1_450_000  # characters: the event stays under Prefect's 1.5 MB

AT_THE_LIMITS: dict[str, tuple[str, str]] = {
    "deepest": (
        "/api/v1/collections",
        json.dumps(event_body(event_id="deepest"))[:-1]
        + f', "processing_parameters": {nested(MAX_DEPTH - 1)}}}',
    ),
    "extreme-numbers": (
        "/api/v1/collections",
        json.dumps(
            event_body(
                event_id="extreme-numbers",
                collection_id=LIMS_INTEGER_MAX,
                image_range=[1, LIMS_INTEGER_MAX],
                grid={
                    "steps_x": 2**63 - 1,
                    "steps_y": 1,
                    "dx_um": 1.7976931348623157e308,
                    "dy_um": 5e-324,
                },
                processing_parameters={"low": -(2**63), "high": 2**63 - 1, "tiny": -5e-324},
            )
        ),
    ),
    "unicode": (
        "/api/v1/collections",
        json.dumps(
            event_body(
                event_id="unicode-\U0001f52c-é",
                visit="mx12345-1",
                processing_parameters={"\U0001f600 key": "ü\u2028\U0010ffff", "\x01": "\x7f"},
            )
        ),
    ),
    "edges-of-time": (
        "/api/v1/collections",
        json.dumps(event_body(event_id="edges-of-time", timestamp="9999-12-31T23:59:59+00:00")),
    ),
    "largest": (
        "/api/v1/collections",
        json.dumps(
            event_body(event_id="largest", processing_parameters={"note": "x" * LARGEST_NOTE})
        ),
    ),
    "bluesky-last-second": (
        "/api/v1/bluesky",
        json.dumps({"name": "start", "doc": START | {"uid": "last", "time": 253_402_300_799}}),
    ),
    "bluesky-epoch": (
        "/api/v1/bluesky",
        json.dumps({"name": "start", "doc": START | {"uid": "epoch", "time": 0}}),
    ),
}


def events_in_store(server: PrefectServer, prefect_ids: list[str]) -> list[dict[str, Any]]:
    """Stored events with these ids, whenever they occurred."""
    response = httpx.post(
        f"{server.api_url}/events/filter",
        json={
            "filter": {
                "id": {"id": prefect_ids},
                "occurred": {
                    "since": "1970-01-01T00:00:00Z",
                    "until": "9999-12-31T23:59:59.999999Z",
                },
            },
            "limit": 50,
        },
        timeout=10.0,
    )
    response.raise_for_status()
    return list(response.json()["events"])


def test_bodies_at_every_limit_reach_prefects_event_store(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, gateway_max_body_bytes=2**21)
    app = create_app(settings, lookup=no_lookup, api_url=prefect_server.api_url)
    receipts = {}
    with TestClient(app) as client:
        for name, (path, body) in AT_THE_LIMITS.items():
            response = client.post(
                path, content=body.encode(), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 202, f"{name}: {response.text[:300]}"
            receipts[name] = response.json()["prefect_event_id"]
        wait_for(lambda: all_emitted(settings), "the events were not emitted")

    def all_stored() -> list[dict[str, Any]] | None:
        found = events_in_store(prefect_server, list(receipts.values()))
        return found if len(found) == len(receipts) else None

    try:
        found = wait_for(all_stored, "every event in Prefect's event store")
    except TimeoutError:
        present = {
            event["id"] for event in events_in_store(prefect_server, list(receipts.values()))
        }
        missing = [name for name, prefect_id in receipts.items() if prefect_id not in present]
        raise AssertionError(f"Prefect lost the events {missing}") from None
    by_id = {event["id"]: event for event in found}
    unicode = by_id[receipts["unicode"]]["payload"]["collection"]["processing_parameters"]
    assert unicode["\U0001f600 key"] == "ü\u2028\U0010ffff"
    largest = by_id[receipts["largest"]]["payload"]["collection"]["processing_parameters"]
    assert len(largest["note"]) == LARGEST_NOTE


def post_examples(client: TestClient, path: str, bodies: Any) -> dict[str, str]:
    """Post hypothesis' bodies; the Prefect event ids of those accepted, by event id."""
    accepted: dict[str, str] = {}

    @hypothesis.given(text=bodies)
    @hypothesis.settings(BOUNDED, max_examples=REAL_SERVER_EXAMPLES)
    def post(text: str) -> None:
        response = client.post(
            path,
            content=text.encode("utf-8", "surrogatepass"),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code < 500, response.text
        if response.status_code == 202:
            accepted[response.json()["event_id"]] = response.json()["prefect_event_id"]

    post()
    return accepted


def test_bodies_hypothesis_gets_accepted_reach_prefects_event_store(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """The property of `test_emittable_property`, checked against the real server."""
    settings = make_settings(tmp_path, gateway_max_body_bytes=2**20)
    app = create_app(settings, lookup=describe_any, api_url=prefect_server.api_url)
    accepted: dict[str, str] = {}
    with TestClient(app) as client:
        for path, bodies in [
            ("/api/v1/collections", collection_bodies()),
            ("/api/v1/bluesky", bluesky_starts()),
            ("/api/v1/zocalo", zocalo_messages()),
        ]:
            accepted |= post_examples(client, path, bodies)
        assert len(accepted) >= 10, f"too few bodies accepted to say anything: {len(accepted)}"
        try:
            wait_for(lambda: all_emitted(settings), "the accepted events were not emitted")
        except TimeoutError:
            stuck = [(row.event_id, row.last_error) for row in stored(settings)]
            raise AssertionError(f"not emitted: {stuck}") from None

    def all_stored() -> list[dict[str, Any]] | None:
        found = events_in_store(prefect_server, list(accepted.values()))
        return found if len(found) == len(accepted) else None

    try:
        wait_for(all_stored, "every accepted event in Prefect's event store")
    except TimeoutError:
        present = {
            event["id"] for event in events_in_store(prefect_server, list(accepted.values()))
        }
        missing = {key: value for key, value in accepted.items() if value not in present}
        raise AssertionError(f"Prefect lost the events {sorted(missing)}") from None
