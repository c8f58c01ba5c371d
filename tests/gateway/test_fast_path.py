"""The announcement endpoints' fast path answers exactly as FastAPI's routes do, and the
drainer sends the bytes the door encoded, which equal the row's own encoding."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from prefect_beamline.events import encode_prefect_event, prefect_event_id, prefect_event_id_text
from prefect_beamline.gateway import fast_path
from prefect_beamline.gateway.emitter import EncodedEvents, _encode_rows
from prefect_beamline.gateway.outbox import Outbox
from tests.gateway.test_app import TOKEN, event_body, make_app, make_settings
from tests.gateway.test_emittable import START, bluesky, with_field

# (path, body, headers): one request of each answer the announcement endpoints give.
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("/api/v1/collections", json.dumps(event_body()), {}),
    ("/api/v1/collections", json.dumps(event_body()), {}),  # duplicate: 200
    ("/api/v1/collections", json.dumps(event_body(collection_id=7)), {}),  # 409
    ("/api/v1/collections", json.dumps(event_body(event_id="x")), {"Authorization": "Bearer no"}),
    ("/api/v1/collections", "{", {}),  # 400
    ("/api/v1/collections", json.dumps(event_body(event_id="y", collection_id="z")), {}),
    ("/api/v1/collections", with_field("grid", "1e400", event_id="z"), {}),  # 422 emittable
    ("/api/v1/collections", json.dumps(event_body(event_id="big", note="x" * 5000)), {}),
    ("/api/v1/collections", json.dumps(event_body(event_id="o", data_files=["/etc/x"])), {}),
    ("/api/v1/bluesky", bluesky("start", **START), {}),
    ("/api/v1/bluesky", bluesky("descriptor", uid="d"), {}),  # ignored
    ("/api/v1/bluesky", bluesky("stop", uid="s", run_start="nope", exit_status="success"), {}),
    ("/api/v1/zocalo", json.dumps({"parameters": {"ispyb_dcid": 5, "event": "end"}}), {}),
]


def answers(tmp_path: Path) -> list[tuple[int, object, str | None]]:
    """Status, JSON body and WWW-Authenticate of each of REQUESTS, on a new gateway."""
    with TestClient(make_app(make_settings(tmp_path))) as client:
        found = []
        for path, body, headers in REQUESTS:
            response = client.post(
                path, content=body.encode(), headers={"Authorization": f"Bearer {TOKEN}", **headers}
            )
            found.append(
                (response.status_code, response.json(), response.headers.get("www-authenticate"))
            )
        return found


def test_fast_path_answers_as_fastapi_routes_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = answers(tmp_path / "fast")
    # With tracing on, every request goes through FastAPI's routes and exception handler.
    monkeypatch.setattr(fast_path, "tracing_enabled", lambda: True)
    routed = answers(tmp_path / "routed")
    assert [status for status, _, _ in fast] == [
        202, 200, 409, 401, 400, 422, 422, 413, 422, 202, 200, 409, 404,
    ]  # fmt: skip
    assert fast == routed


def test_door_encodes_each_event_as_its_row_encodes_and_the_drainer_sends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    door: dict[int, bytes] = {}
    put = EncodedEvents.put

    def recording_put(self: EncodedEvents, sequence: int, encoded: bytes) -> None:
        door[sequence] = encoded
        put(self, sequence, encoded)

    monkeypatch.setattr(EncodedEvents, "put", recording_put)
    with TestClient(make_app(settings)) as client:
        for i in range(1, 6):
            body = json.dumps(event_body(event_id=f"e{i}", collection_id=i)).encode()
            response = client.post(
                "/api/v1/collections", content=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 202
    outbox = Outbox(settings.resolved_outbox_url)
    try:
        rows = outbox.list()
    finally:
        outbox.close()
    assert sorted(door) == [row.sequence for row in rows] and len(rows) == 5
    for row in rows:
        assert door[row.sequence] == encode_prefect_event(row.event)
        assert json.loads(door[row.sequence])["id"] == str(prefect_event_id(row.event_id))
    known = EncodedEvents()
    known.put(rows[0].sequence, b"door bytes")
    built = _encode_rows(rows[:2], known)
    assert [body for _, body in built] == [b"door bytes", encode_prefect_event(rows[1].event)]
    assert len(known) == 0  # taken once: a retry encodes the row again


def test_encoded_events_forget_the_oldest_past_their_capacity() -> None:
    known = EncodedEvents(capacity=3)
    for sequence in range(1, 6):
        known.put(sequence, b"%d" % sequence)
    assert len(known) == 3
    assert [known.take(sequence) for sequence in range(1, 6)] == [None, None, b"3", b"4", b"5"]
    assert len(known) == 0


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_event_id_text_is_the_uuid5(daq_event_id: str) -> None:
    text = prefect_event_id_text(daq_event_id)
    assert text == str(prefect_event_id(daq_event_id))
    assert uuid.UUID(text).version == 5
