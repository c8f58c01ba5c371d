"""The gateway refuses bad input with a status naming the problem, and stores what it
accepts exactly once, before it answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_beamline.events import CollectionEvent, CollectionEventKind, Technique
from prefect_beamline.gateway.auth import SIGNATURE_HEADER, body_signature
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.gateway.server import app_from_settings
from prefect_beamline.lims import Lims
from prefect_beamline.settings import BeamlineSettings

TOKEN = "daq-token"
SECRET = "hmac-secret"
CLOSED_PORT_API = "http://127.0.0.1:9/api"  # nothing listens: events stay pending


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


@pytest.fixture
def settings(tmp_path: Path) -> BeamlineSettings:
    return BeamlineSettings(
        home=tmp_path, gateway_token=TOKEN, gateway_max_body_bytes=4096
    )  # type: ignore[call-arg]


@pytest.fixture
def client(settings: BeamlineSettings) -> Iterator[TestClient]:
    with TestClient(app_from_settings(settings, api_url=CLOSED_PORT_API)) as test_client:
        yield test_client


def post(client: TestClient, body: bytes | dict[str, Any], path: str = "/api/v1/collections",
         headers: dict[str, str] | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    all_headers.update(headers or {})
    return client.post(path, content=content, headers=all_headers)


def stored(settings: BeamlineSettings) -> list[Any]:
    """The outbox as a fresh connection sees it (what survives a crash)."""
    return Outbox(settings.resolved_outbox_url).list()


def test_accepted_event_is_stored_before_the_answer(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, event_body())
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "accepted"
    rows = stored(settings)
    assert [r.event_id for r in rows] == ["i03-0042-end"]
    assert rows[0].status == "pending" and rows[0].sequence == answer["sequence"]
    assert answer["prefect_event_id"] == str(rows[0].event.prefect_event_id)


def test_duplicate_delivery_is_accepted_once(client: TestClient, settings: BeamlineSettings) -> None:
    first = post(client, event_body())
    again = post(client, event_body())
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["sequence"] == first.json()["sequence"]
    assert len(stored(settings)) == 1


def test_bad_json_is_400_and_nothing_stored(client: TestClient, settings: BeamlineSettings) -> None:
    response = post(client, b'{"event_id": "x", ')
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert stored(settings) == []


def test_missing_field_is_422_naming_it(client: TestClient, settings: BeamlineSettings) -> None:
    body = event_body()
    del body["collection_id"]
    response = post(client, body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["detail"]] == ["collection_id"]
    assert stored(settings) == []


def test_wrong_field_value_is_422_naming_it(client: TestClient) -> None:
    response = post(client, event_body(data_files=["relative/path.h5"]))
    assert response.status_code == 422
    assert "absolute" in json.dumps(response.json()["detail"])
    response = post(client, event_body(technique="xrf"))
    assert response.json()["detail"][0]["field"] == "technique"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc", "Bearer"])
def test_wrong_or_missing_token_is_401(
    client: TestClient, settings: BeamlineSettings, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.post("/api/v1/collections", content=json.dumps(event_body()), headers=headers)
    assert response.status_code == 401
    assert stored(settings) == []


def test_oversized_body_is_413(client: TestClient, settings: BeamlineSettings) -> None:
    response = post(client, event_body(processing_parameters={"note": "x" * 5000}))
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]
    assert stored(settings) == []


def test_signature_is_required_and_checked(tmp_path: Path) -> None:
    settings = BeamlineSettings(
        home=tmp_path, gateway_token=TOKEN, gateway_hmac_secret=SECRET
    )  # type: ignore[call-arg]
    body = json.dumps(event_body()).encode()
    with TestClient(app_from_settings(settings, api_url=CLOSED_PORT_API)) as client:
        assert post(client, body).status_code == 401
        bad = post(client, body, headers={SIGNATURE_HEADER: body_signature(b"other", SECRET)})
        assert bad.status_code == 401 and "does not match" in bad.json()["detail"]
        good = post(client, body, headers={SIGNATURE_HEADER: body_signature(body, SECRET)})
        assert good.status_code == 202
    assert len(stored(settings)) == 1


def test_health_reports_backlog_and_openapi_is_served(client: TestClient) -> None:
    post(client, event_body())
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["pending"] >= 0
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/collections", "/api/v1/zocalo", "/api/v1/bluesky"} <= set(schema["paths"])


def test_zocalo_message_is_resolved_through_the_lims(
    client: TestClient, settings: BeamlineSettings
) -> None:
    Lims(settings.resolved_lims_url).record_data_collection(
        CollectionEvent.model_validate(event_body(collection_id=1234, kind="started"))
    )
    message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": 1234, "event": "end"}}
    response = post(client, message, "/api/v1/zocalo")
    assert response.status_code == 202, response.text
    event = stored(settings)[0].event
    assert event.kind == CollectionEventKind.finished
    assert event.technique == Technique.mx and event.experiment_type == "rotation"
    assert event.data_files == ["/data/i03/xtal_1_master.h5"]
    assert event.source == "zocalo" and event.event_id == "zocalo-1234-end"


def test_zocalo_message_with_unknown_collection_names_it(client: TestClient) -> None:
    message = {"recipes": [], "parameters": {"ispyb_dcid": 999, "event": "start"}}
    response = post(client, message, "/api/v1/zocalo")
    assert response.status_code == 404
    assert "999" in response.json()["detail"]


def test_zocalo_message_missing_dcid_is_422(client: TestClient) -> None:
    response = post(client, {"recipes": [], "parameters": {"event": "start"}}, "/api/v1/zocalo")
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "parameters.ispyb_dcid"


def bluesky_start(uid: str = "run-1") -> dict[str, Any]:
    return {
        "name": "start",
        "doc": {
            "uid": uid,
            "time": 1.0,
            "technique": "mx",
            "experiment_type": "rotation",
            "beamline": "i04",
            "visit": "mx999-2",
            "data_collection_id": 77,
            "data_files": "/data/i04/x_master.h5",
            "processing": {"sigma_strong": 4.0},
        },
    }


def test_bluesky_start_and_stop_map_to_started_and_finished(
    client: TestClient, settings: BeamlineSettings
) -> None:
    assert post(client, bluesky_start(), "/api/v1/bluesky").status_code == 202
    stop = {"name": "stop", "doc": {"uid": "stop-1", "run_start": "run-1", "exit_status": "success"}}
    assert post(client, stop, "/api/v1/bluesky").status_code == 202
    started, finished = (row.event for row in stored(settings))
    assert started.kind == CollectionEventKind.started
    assert finished.kind == CollectionEventKind.finished
    assert finished.collection_id == 77 and finished.beamline == "i04"
    assert finished.processing_parameters == {"sigma_strong": 4.0}


def test_bluesky_stop_without_start_is_409(client: TestClient) -> None:
    stop = {"name": "stop", "doc": {"uid": "s", "run_start": "never-seen"}}
    response = post(client, stop, "/api/v1/bluesky")
    assert response.status_code == 409
    assert "never-seen" in response.json()["detail"]


def test_bluesky_start_missing_metadata_is_named(client: TestClient) -> None:
    document = bluesky_start()
    del document["doc"]["data_collection_id"]
    response = post(client, document, "/api/v1/bluesky")
    assert response.status_code == 422
    assert "doc.data_collection_id" in response.json()["detail"]


def test_aborted_bluesky_run_is_kept_but_not_processed(
    client: TestClient, settings: BeamlineSettings
) -> None:
    post(client, bluesky_start(), "/api/v1/bluesky")
    stop = {"name": "stop", "doc": {"uid": "stop-1", "run_start": "run-1", "exit_status": "abort"}}
    response = post(client, stop, "/api/v1/bluesky")
    assert response.json()["status"] == "skipped"
    assert [r.status for r in stored(settings)] == ["pending", "skipped"]
