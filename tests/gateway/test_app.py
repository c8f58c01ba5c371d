"""The gateway refuses bad input with a status naming the problem, and commits what it
accepts exactly once, before it answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.exc import OperationalError

from prefect_beamline.gateway.auth import SIGNATURE_HEADER, body_signature
from prefect_beamline.gateway.outbox import Outbox, StoredEvent
from prefect_beamline.gateway.server import create_app
from prefect_beamline.settings import BeamlineSettings

TOKEN = "daq-token"
OPERATOR_TOKEN = "operator-token"
SECRET = "hmac-secret"
CLOSED_PORT_API = "http://127.0.0.1:9/api"  # nothing listens: events stay pending
LIMIT = 4096


def event_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "i03-0042-end",
        "kind": "finished",
        "technique": "mx",
        "experiment_type": "rotation",
        "beamline": "i03",
        "visit": "mx12345-1",
        "collection_id": 42,
        "data_files": ["/data/i03/xtal_1_master.h5"],
    }
    body.update(changes)
    return body


def no_lookup(dcid: int) -> None:
    return None


def make_settings(tmp_path: Path, **changes: Any) -> BeamlineSettings:
    values: dict[str, Any] = {
        "home": tmp_path,
        "gateway_token": TOKEN,
        "operator_token": OPERATOR_TOKEN,
        "data_roots": ["/data"],
        "gateway_max_body_bytes": LIMIT,
    }
    values.update(changes)
    return BeamlineSettings(**values)


def make_app(settings: BeamlineSettings, **options: Any) -> FastAPI:
    options.setdefault("lookup", no_lookup)
    return create_app(settings, api_url=CLOSED_PORT_API, **options)


def post(
    client: TestClient,
    body: bytes | dict[str, Any],
    path: str = "/api/v1/collections",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    all_headers.update(headers or {})
    return client.post(path, content=content, headers=all_headers)


def stored(settings: BeamlineSettings) -> list[StoredEvent]:
    """The outbox as a fresh connection sees it (what survives a crash)."""
    outbox = Outbox(settings.resolved_outbox_url)
    try:
        return outbox.list()
    finally:
        outbox.close()


def test_accepted_event_is_committed_before_the_answer_starts(
    settings: BeamlineSettings,
) -> None:
    app = make_app(settings)
    seen_at_answer: list[list[str]] = []

    async def watching(scope: Any, receive: Any, send: Any) -> None:
        async def send_after_checking(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and scope["path"].startswith("/api"):
                seen_at_answer.append([row.event_id for row in stored(settings)])
            await send(message)

        await app(scope, receive, send_after_checking)

    with TestClient(watching) as client:
        response = post(client, event_body())
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "accepted" and answer["event_id"] == "i03-0042-end"
    assert seen_at_answer == [["i03-0042-end"]]
    (row,) = stored(settings)
    assert row.sequence == answer["sequence"]
    assert answer["prefect_event_id"] == str(row.event.prefect_event_id)
    assert row.raw_body == json.dumps(event_body()).encode()


def test_duplicate_delivery_is_accepted_once(
    client: TestClient, settings: BeamlineSettings
) -> None:
    first = post(client, event_body())
    reordered = json.dumps(dict(reversed(event_body().items())), indent=1).encode()
    again = post(client, reordered)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["sequence"] == first.json()["sequence"]
    assert len(stored(settings)) == 1


def test_replayed_event_id_with_another_body_is_409(
    client: TestClient, settings: BeamlineSettings
) -> None:
    first = post(client, event_body())
    changed = post(client, event_body(beamline="i04"))
    assert first.status_code == 202
    assert changed.status_code == 409, changed.text
    detail = changed.json()["detail"]
    assert "i03-0042-end" in detail and "different body" in detail
    (row,) = stored(settings)
    assert row.event.beamline == "i03"


def test_full_backlog_is_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, outbox_max_pending=2)
    with TestClient(make_app(settings)) as client:  # Prefect is down: nothing drains
        answers = [post(client, event_body(event_id=f"e{n}")) for n in range(3)]
        again = post(client, event_body(event_id="e0"))
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[2].headers["Retry-After"].isdigit()
    assert "outbox_max_pending" in answers[2].json()["detail"]
    assert again.status_code == 200  # a redelivery of a stored event is still answered
    assert [row.event_id for row in stored(settings)] == ["e0", "e1"]


def test_concurrent_requests_are_committed_together(settings: BeamlineSettings) -> None:
    app = make_app(settings)
    outbox: Outbox = app.state.outbox
    commits: list[int] = []
    sqlalchemy_event.listen(outbox.engine, "commit", lambda connection: commits.append(1))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def deliver_many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/collections",
                        content=json.dumps(event_body(event_id=f"e{n}")),
                        headers=headers,
                    )
                    for n in range(64)
                )
            )

    responses = asyncio.run(deliver_many())
    assert [r.status_code for r in responses] == [202] * 64
    assert len({r.json()["sequence"] for r in responses}) == 64
    assert len(stored(settings)) == 64
    assert len(commits) < 64 / 4  # grouped, not one transaction per request


def test_concurrent_duplicate_deliveries_store_one_row(settings: BeamlineSettings) -> None:
    app = make_app(settings)
    body = json.dumps(event_body()).encode()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def deliver_many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await asyncio.gather(
                *(
                    client.post("/api/v1/collections", content=body, headers=headers)
                    for _ in range(8)
                )
            )

    responses = asyncio.run(deliver_many())
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 7
    assert len({r.json()["sequence"] for r in responses}) == 1
    assert len(stored(settings)) == 1


def test_bad_json_is_400_naming_the_position(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, b'{"event_id": "x", ')
    assert response.status_code == 400
    assert "line 1 column 19" in response.json()["detail"]
    assert stored(settings) == []


@pytest.mark.parametrize("body", [b"", b"\xff\xfe{"])
def test_empty_or_undecodable_body_is_400(
    client: TestClient, settings: BeamlineSettings, body: bytes
) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.text
    assert "JSON" in response.json()["detail"]
    assert stored(settings) == []


def test_missing_field_is_422_naming_it(client: TestClient, settings: BeamlineSettings) -> None:
    body = event_body()
    del body["collection_id"]
    response = post(client, body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["detail"]] == ["collection_id"]
    assert response.json()["message"].startswith("collection_id: Field required")
    assert stored(settings) == []


def test_wrong_values_are_422_naming_each_field(client: TestClient) -> None:
    response = post(client, event_body(technique="xrf", grid={"steps_x": 0}))
    fields = {e["field"] for e in response.json()["detail"]}
    assert response.status_code == 422
    assert {"technique", "grid.steps_x", "grid.steps_y"} <= fields
    relative = post(client, event_body(data_files=["relative/path.h5"]))
    assert relative.status_code == 422 and "relative/path.h5" in relative.json()["message"]


def test_json_that_is_not_an_object_is_422(client: TestClient) -> None:
    response = post(client, b"[1, 2]")
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "(body)"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_wrong_or_missing_token_is_401_and_stores_nothing(
    client: TestClient, settings: BeamlineSettings, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/api/v1/collections", content=json.dumps(event_body()), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]
    assert stored(settings) == []


def test_signature_is_required_and_checked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, gateway_hmac_secret=SECRET)
    body = json.dumps(event_body()).encode()
    with TestClient(make_app(settings)) as client:
        missing = post(client, body)
        bad = post(client, body, headers={SIGNATURE_HEADER: body_signature(b"other", SECRET)})
        assert stored(settings) == []
        good = post(client, body, headers={SIGNATURE_HEADER: body_signature(body, SECRET)})
    assert missing.status_code == 401 and SIGNATURE_HEADER in missing.json()["detail"]
    assert bad.status_code == 401 and "does not match" in bad.json()["detail"]
    assert good.status_code == 202
    assert len(stored(settings)) == 1


def test_signature_alone_authenticates_without_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, gateway_token=None, gateway_hmac_secret=SECRET)
    body = json.dumps(event_body()).encode()
    signature = body_signature(body, SECRET).upper().replace("SHA256=", "sha256=")
    with TestClient(make_app(settings)) as client:
        response = client.post(
            "/api/v1/collections", content=body, headers={SIGNATURE_HEADER: signature}
        )
    assert response.status_code == 202


def test_declared_oversized_body_is_413(client: TestClient, settings: BeamlineSettings) -> None:
    response = post(client, event_body(processing_parameters={"note": "x" * LIMIT}))
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["detail"]
    assert stored(settings) == []


def test_oversized_body_without_content_length_is_413(
    client: TestClient, settings: BeamlineSettings
) -> None:
    body = json.dumps(event_body(processing_parameters={"note": "x" * LIMIT})).encode()
    chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))  # chunked: no length
    response = client.post(
        "/api/v1/collections", content=chunks, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 413
    assert stored(settings) == []


def test_outbox_that_cannot_be_written_is_503_never_202(settings: BeamlineSettings) -> None:
    app = make_app(settings)

    def broken_add(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    app.state.outbox.add_many = broken_add
    with TestClient(app) as client:
        response = post(client, event_body())
    assert response.status_code == 503 and "retry" in response.json()["detail"]


def test_health_reports_backlog_and_an_unreachable_prefect(client: TestClient) -> None:
    post(client, event_body())
    health = client.get("/health", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok" and report["pending"] == 1
    assert report["outbox"]["failed"] == 0
    assert report["prefect_reachable"] is False
    assert report["prefect_api_url"] == CLOSED_PORT_API


def test_outbox_listing_needs_the_token_and_filters_by_status(client: TestClient) -> None:
    post(client, event_body())
    assert client.get("/api/v1/outbox").status_code == 401
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    pending = client.get("/api/v1/outbox", params={"status": "pending"}, headers=auth).json()
    assert [row["event_id"] for row in pending] == ["i03-0042-end"]
    assert client.get("/api/v1/outbox", params={"status": "emitted"}, headers=auth).json() == []
    unknown = client.get("/api/v1/outbox", params={"status": "done"}, headers=auth)
    assert unknown.status_code == 422


def test_outbox_listing_pages_and_names_the_next_page(client: TestClient) -> None:
    for number in range(3):
        post(client, event_body(event_id=f"e{number}"))
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    first = client.get("/api/v1/outbox", params={"limit": 2}, headers=auth)
    assert [row["event_id"] for row in first.json()] == ["e0", "e1"]
    after = first.headers["X-Outbox-Next-After"]
    rest = client.get("/api/v1/outbox", params={"limit": 2, "after": after}, headers=auth)
    assert [row["event_id"] for row in rest.json()] == ["e2"]
    assert "X-Outbox-Next-After" not in rest.headers


def test_openapi_documents_every_endpoint_and_its_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/collections", "/api/v1/zocalo", "/api/v1/bluesky"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"], path
        assert {"202", "400", "401", "413", "422"} <= set(paths[path]["post"]["responses"])
    assert {"/health", "/api/v1/outbox"} <= set(paths)
    assert client.get("/docs").status_code == 200
