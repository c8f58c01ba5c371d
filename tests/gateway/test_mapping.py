"""Zocalo trigger messages and Bluesky documents become collection events.

Zocalo messages are resolved through a real SQLite LIMS (`Lims.get_collection`), filled
the way the DAQ's own announcement fills it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.gateway.outbox import PENDING, SKIPPED, Outbox
from prefect_beamline.lims import CollectionDescription, Lims
from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import TOKEN, event_body, make_app, make_settings, stored

GRID = {"steps_x": 4, "steps_y": 3, "dx_um": 20.0, "dy_um": 20.0, "snaked": True}


@pytest.fixture
def settings(tmp_path: Path) -> BeamlineSettings:
    return make_settings(tmp_path)


@pytest.fixture
def lims(settings: BeamlineSettings) -> Iterator[Lims]:
    """The LIMS knows collection 1234 (rotation, 3600 images) and 1235 (a grid scan)."""
    client = Lims(settings.resolved_lims_url)
    client.create_schema()
    client.record_data_collection(
        CollectionEvent.model_validate(
            event_body(collection_id=1234, kind="started", image_range=[1, 3600])
        )
    )
    client.record_data_collection(
        CollectionEvent.model_validate(
            event_body(collection_id=1235, experiment_type="gridscan", grid=GRID)
        )
    )
    yield client
    client.close()


@pytest.fixture
def client(settings: BeamlineSettings, lims: Lims) -> Iterator[TestClient]:
    with TestClient(make_app(settings, lookup=lims.get_collection)) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}"})


def zocalo(dcid: int, event: str, **parameters: Any) -> dict[str, Any]:
    return {"recipes": ["mimas"], "parameters": {"ispyb_dcid": dcid, "event": event, **parameters}}


def only_event(settings: BeamlineSettings) -> CollectionEvent:
    (row,) = stored(settings)
    return row.event


# -- Zocalo ------------------------------------------------------------------------------


def test_zocalo_end_becomes_finished_with_the_lims_description(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, "/api/v1/zocalo", zocalo(1234, "end"))
    assert response.status_code == 202, response.text
    event = only_event(settings)
    assert event.kind == CollectionEventKind.finished and event.source == "zocalo"
    assert (event.technique, event.experiment_type) == ("mx", "rotation")
    assert (event.beamline, event.visit, event.collection_id) == ("i03", "mx12345-1", 1234)
    assert event.data_files == ["/data/i03/xtal_1_master.h5"]
    assert event.image_range == (1, 3600)
    assert event.event_id == response.json()["event_id"] == "zocalo-1234-end"


def test_zocalo_start_takes_its_frames_and_trigger_index(
    client: TestClient, settings: BeamlineSettings
) -> None:
    # As dodal's ZocaloTrigger.run_start sends it (ZocaloStartInfo + event).
    message = zocalo(
        1235,
        "start",
        filename="/dev/shm/eiger/xtal_1",
        start_frame_index=12,
        number_of_frames=12,
        message_index=1,
    )
    assert post(client, "/api/v1/zocalo", message).status_code == 202
    event = only_event(settings)
    assert event.kind == CollectionEventKind.started
    assert event.event_id == "zocalo-1235-start-1"
    assert event.image_range == (13, 24)
    assert event.grid is not None and (event.grid.steps_x, event.grid.snaked) == (4, True)


def test_zocalo_recipes_are_recorded_not_passed_to_the_flows(
    client: TestClient, settings: BeamlineSettings
) -> None:
    post(client, "/api/v1/zocalo", zocalo(1234, "end", guid="6f1c-guid"))
    (row,) = stored(settings)
    assert row.event.event_id == "6f1c-guid"
    assert row.event.processing_parameters == {}
    assert json.loads(row.raw_body)["recipes"] == ["mimas"]


def test_zocalo_redelivery_is_a_duplicate(client: TestClient, settings: BeamlineSettings) -> None:
    first = post(client, "/api/v1/zocalo", zocalo(1234, "end"))
    again = post(client, "/api/v1/zocalo", zocalo(1234, "end"))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate" and len(stored(settings)) == 1


def test_zocalo_unknown_collection_is_404_naming_it(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, "/api/v1/zocalo", zocalo(999, "start"))
    assert response.status_code == 404
    assert "999" in response.json()["detail"] and "ispyb_dcid" in response.json()["detail"]
    assert stored(settings) == []


def test_zocalo_message_without_dcid_or_with_unknown_event_is_422(client: TestClient) -> None:
    missing = post(client, "/api/v1/zocalo", {"recipes": [], "parameters": {"event": "start"}})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "parameters.ispyb_dcid"
    wrong = post(client, "/api/v1/zocalo", zocalo(1234, "middle"))
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "parameters.event"


def test_zocalo_with_an_unusable_lims_row_is_422_naming_the_collection(
    settings: BeamlineSettings,
) -> None:
    def incomplete(dcid: int) -> CollectionDescription:
        raise ValueError(f"DataCollection {dcid} has no imageDirectory/fileTemplate")

    with TestClient(make_app(settings, lookup=incomplete)) as client:
        response = post(client, "/api/v1/zocalo", zocalo(77, "end"))
    assert response.status_code == 422
    assert "data collection 77" in response.json()["detail"]


def test_zocalo_with_the_lims_down_is_503_so_the_sender_retries(
    settings: BeamlineSettings,
) -> None:
    def down(dcid: int) -> CollectionDescription:
        raise ConnectionError("LIMS server has gone away")

    with TestClient(make_app(settings, lookup=down)) as client:
        response = post(client, "/api/v1/zocalo", zocalo(77, "end"))
    assert response.status_code == 503 and "retry" in response.json()["detail"]
    assert stored(settings) == []


# -- Bluesky -----------------------------------------------------------------------------


def bluesky_start(uid: str = "run-1", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uid": uid,
        "time": 1_790_000_000.5,
        "scan_id": 7,
        "plan_name": "rotation_scan",
        "technique": "mx",
        "experiment_type": "rotation",
        "beamline": "i04",
        "visit": "mx999-2",
        "data_collection_id": 77,
        "data_files": "/data/i04/x_master.h5",
        "processing": {"sigma_strong": 4.0},
    }
    doc.update(changes)
    return {"name": "start", "doc": doc}


def bluesky_stop(run_start: str = "run-1", exit_status: str = "success") -> dict[str, Any]:
    doc = {"uid": "stop-1", "time": 1_790_000_100.0, "run_start": run_start}
    return {"name": "stop", "doc": doc | {"exit_status": exit_status, "reason": ""}}


def test_bluesky_start_becomes_started_with_its_metadata(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, "/api/v1/bluesky", bluesky_start())
    assert response.status_code == 202, response.text
    event = only_event(settings)
    assert event.kind == CollectionEventKind.started and event.event_id == "run-1"
    assert (event.beamline, event.visit, event.collection_id) == ("i04", "mx999-2", 77)
    assert event.data_files == ["/data/i04/x_master.h5"]
    assert event.processing_parameters == {"sigma_strong": 4.0}
    assert event.timestamp == datetime.fromtimestamp(1_790_000_000.5, UTC)


def test_bluesky_stop_is_mapped_through_the_stored_start_after_a_restart(
    settings: BeamlineSettings, lims: Lims
) -> None:
    with TestClient(make_app(settings, lookup=lims.get_collection)) as client:
        assert post(client, "/api/v1/bluesky", bluesky_start()).status_code == 202
    with TestClient(make_app(settings, lookup=lims.get_collection)) as client:  # restarted
        response = post(client, "/api/v1/bluesky", bluesky_stop())
    assert response.status_code == 202, response.text
    started, finished = (row.event for row in stored(settings))
    assert finished.kind == CollectionEventKind.finished and finished.event_id == "stop-1"
    per_announcement = {"kind", "event_id", "timestamp", "traceparent"}
    assert finished.model_dump(exclude=per_announcement) == started.model_dump(
        exclude=per_announcement
    )
    assert finished.timestamp == datetime.fromtimestamp(1_790_000_100.0, UTC)


def test_bluesky_stop_without_its_start_is_409_naming_the_uid(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, "/api/v1/bluesky", bluesky_stop("never-seen"))
    assert response.status_code == 409
    assert "never-seen" in response.json()["detail"]
    assert stored(settings) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"data_collection_id": 0}, "doc.data_collection_id"),
        ({"technique": "xrf"}, "doc.technique"),
        ({"data_files": "relative.h5"}, "doc"),
        ({"processing": [1]}, "doc.processing"),
    ],
)
def test_bluesky_start_with_wrong_metadata_is_422_naming_the_key(
    client: TestClient, settings: BeamlineSettings, changes: dict[str, Any], field: str
) -> None:
    document = bluesky_start(**changes)
    document["doc"] = {k: v for k, v in document["doc"].items() if v is not None}
    response = post(client, "/api/v1/bluesky", document)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["detail"]]
    assert stored(settings) == []


def test_rejected_start_is_not_remembered_for_its_stop(client: TestClient) -> None:
    post(client, "/api/v1/bluesky", bluesky_start(technique="xrf"))
    assert post(client, "/api/v1/bluesky", bluesky_stop()).status_code == 409


def test_stop_without_exit_status_is_422(client: TestClient) -> None:
    post(client, "/api/v1/bluesky", bluesky_start())
    document = bluesky_stop()
    del document["doc"]["exit_status"]
    response = post(client, "/api/v1/bluesky", document)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "doc.exit_status"


def test_aborted_run_is_recorded_but_not_emitted_until_requeued(
    client: TestClient, settings: BeamlineSettings
) -> None:
    post(client, "/api/v1/bluesky", bluesky_start())
    response = post(client, "/api/v1/bluesky", bluesky_stop(exit_status="abort"))
    assert response.status_code == 202 and response.json()["status"] == "skipped"
    started, stopped = stored(settings)
    assert (started.status, stopped.status) == (PENDING, SKIPPED)
    assert stopped.event.kind == CollectionEventKind.finished
    assert stopped.note is not None and "'abort'" in stopped.note
    assert Outbox(settings.resolved_outbox_url).requeue(["stop-1"]) == 1
    assert stored(settings)[1].status == PENDING


@pytest.mark.parametrize("name", ["descriptor", "event", "resource"])
def test_other_bluesky_documents_are_ignored(
    client: TestClient, settings: BeamlineSettings, name: str
) -> None:
    response = post(client, "/api/v1/bluesky", {"name": name, "doc": {"uid": "d-1"}})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert stored(settings) == []


def test_unknown_bluesky_document_name_is_422(client: TestClient) -> None:
    response = post(client, "/api/v1/bluesky", {"name": "begin", "doc": {}})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "name"
