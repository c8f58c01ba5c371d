"""What a real facility sends the gateway: ISPyB experiment types, Bluesky start documents
without a data collection id (the gateway creates it), collections nobody processes, and
the DAQ reading a collection's results back."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefect_beamline.events import GridScan
from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import (
    ISPYB_EXPERIMENT_TYPES,
    ISPYB_NOT_PROCESSED,
    DataCollectionGroup,
    technique_for_experiment_type,
)
from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import TOKEN, event_body, make_app, make_settings, stored

GRID = GridScan(steps_x=4, steps_y=3, dx_um=20, dy_um=20)


@pytest.fixture
def settings(tmp_path: Path) -> BeamlineSettings:
    return make_settings(tmp_path)


@pytest.fixture
def lims(settings: BeamlineSettings) -> Iterator[Lims]:
    client = Lims(settings.resolved_lims_url)
    client.create_schema()
    yield client
    client.close()


@pytest.fixture
def client(settings: BeamlineSettings, lims: Lims) -> Iterator[TestClient]:
    with TestClient(make_app(settings, lookup=lims.get_collection)) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}"})


def hyperion_start(uid: str = "run-9", **changes: Any) -> dict[str, Any]:
    """A start document as a Bluesky DAQ writes it before ISPyB has a collection."""
    doc: dict[str, Any] = {
        "uid": uid,
        "time": 1_790_000_000.0,
        "plan_name": "rotation_scan",
        "experiment_type": "SAD",
        "beamline": "i03",
        "visit": "cm40607-3",
        "data_file": "/data/i03/cm40607-3/thau_1_master.h5",
        "num_images": 360,
    }
    doc.update(changes)
    return {"name": "start", "doc": doc}


def stop(run_start: str, uid: str = "stop-9") -> dict[str, Any]:
    doc = {"uid": uid, "time": 1_790_000_100.0, "run_start": run_start, "exit_status": "success"}
    return {"name": "stop", "doc": doc}


# -- ISPyB experiment types ----------------------------------------------------------------


def test_every_ispyb_experiment_type_is_mapped_or_says_why_not() -> None:
    for ispyb_type in ISPYB_EXPERIMENT_TYPES:
        if ispyb_type in ISPYB_NOT_PROCESSED:
            with pytest.raises(ValueError, match=re.escape(ISPYB_NOT_PROCESSED[ispyb_type])):
                technique_for_experiment_type(ispyb_type)
        else:
            technique_for_experiment_type(ispyb_type)  # raises when unmapped
    assert set(ISPYB_NOT_PROCESSED) <= set(ISPYB_EXPERIMENT_TYPES)


@pytest.mark.parametrize(
    ("ispyb_type", "expected"),
    [
        ("SAD", ("mx", "rotation")),  # Hyperion's rotations
        ("Mesh3D", ("mx", "gridscan")),  # Hyperion's grid scans
        ("Mesh", ("mx", "gridscan")),
        ("OSC", ("mx", "rotation")),
        ("EM", ("em", "default")),
        ("tomo", ("tomo", "default")),
    ],
)
def test_field_values_map_to_technique_and_experiment_type(
    ispyb_type: str, expected: tuple[str, str]
) -> None:
    assert technique_for_experiment_type(ispyb_type) == expected


def test_collection_no_deployment_processes_is_refused_at_the_door(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, "/api/v1/collections", event_body(experiment_type="still"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "technique 'mx' with experiment_type 'still'" in detail
    assert "deployed: " in detail and "mx/gridscan" in detail and "tomo/*" in detail
    assert stored(settings) == []


def test_recording_a_collection_keeps_the_daq_s_own_experiment_type(lims: Lims) -> None:
    from prefect_beamline.lims.schema import DataCollection
    from tests.helpers import collection_event

    lims.record_data_collection(collection_event(7))
    with lims.transaction(write=True) as session:
        group_id = session.get_one(DataCollection, 7).dataCollectionGroupId
        session.get_one(DataCollectionGroup, group_id).experimentType = "SAD"  # Hyperion's
    lims.record_data_collection(collection_event(7))  # a flow records it again
    with lims.transaction(write=False) as session:
        assert session.get_one(DataCollectionGroup, group_id).experimentType == "SAD"
    lims.record_data_collection(collection_event(7, grid=GRID, experiment_type="gridscan"))
    with lims.transaction(write=False) as session:  # a different experiment: rewritten
        assert session.get_one(DataCollectionGroup, group_id).experimentType == "Mesh"


# -- Bluesky without a data collection id ----------------------------------------------------


def test_start_without_a_dcid_creates_the_data_collection_and_the_stop_finds_it(
    client: TestClient, settings: BeamlineSettings, lims: Lims
) -> None:
    started = post(client, "/api/v1/bluesky", hyperion_start())
    assert started.status_code == 202, started.text
    finished = post(client, "/api/v1/bluesky", stop("run-9"))
    assert finished.status_code == 202, finished.text
    start_event, stop_event = (row.event for row in stored(settings))
    dcid = start_event.collection_id
    assert stop_event.collection_id == dcid
    assert (start_event.technique, start_event.experiment_type) == ("mx", "rotation")
    assert start_event.image_range == (1, 360)
    collection = lims.get_collection(dcid)
    assert collection is not None
    assert collection.data_files == ["/data/i03/cm40607-3/thau_1_master.h5"]
    assert (collection.visit, collection.beamline, collection.image_range) == (
        "cm40607-3",
        "i03",
        (1, 360),
    )


def test_start_posted_again_creates_no_second_collection(
    client: TestClient, settings: BeamlineSettings, lims: Lims
) -> None:
    first = post(client, "/api/v1/bluesky", hyperion_start())
    again = post(client, "/api/v1/bluesky", hyperion_start())
    assert (first.status_code, again.status_code) == (202, 200)
    with lims.transaction(write=False) as session:
        assert session.query(DataCollectionGroup).count() == 1


def test_new_collections_get_new_ids(client: TestClient, settings: BeamlineSettings) -> None:
    post(client, "/api/v1/bluesky", hyperion_start("run-a"))
    post(client, "/api/v1/bluesky", hyperion_start("run-b", experiment_type="Mesh3D",
         grid={"steps_x": 4, "steps_y": 3, "dx_um": 20, "dy_um": 20}))  # fmt: skip
    first, second = (row.event for row in stored(settings))
    assert second.collection_id == first.collection_id + 1
    assert second.experiment_type == "gridscan"


def test_stop_after_a_refused_start_says_the_start_was_refused_and_why(
    client: TestClient, settings: BeamlineSettings, lims: Lims
) -> None:
    refused = post(client, "/api/v1/bluesky", hyperion_start(experiment_type="Still"))
    assert refused.status_code == 422
    answer = post(client, "/api/v1/bluesky", stop("run-9"))
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert "'run-9' was refused" in detail
    assert "experiment_type 'still'" in detail
    assert "post the start document first" not in detail
    assert stored(settings) == []
    with lims.transaction(write=False) as session:  # nothing created for a refused start
        assert session.query(DataCollectionGroup).count() == 0


def test_start_of_an_ispyb_type_nothing_here_processes_is_422_saying_why(
    client: TestClient, settings: BeamlineSettings
) -> None:
    refused = post(client, "/api/v1/bluesky", hyperion_start(experiment_type="Energy scan"))
    assert refused.status_code == 422
    assert "'Energy scan' is not mapped" in refused.text and "spectroscopy" in refused.text
    assert stored(settings) == []


# -- results for the DAQ --------------------------------------------------------------------


def test_results_need_the_daq_token_and_name_an_unknown_collection(
    client: TestClient, lims: Lims
) -> None:
    assert client.get("/api/v1/collections/5/results").status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    unknown = client.get("/api/v1/collections/5/results", headers=headers)
    assert unknown.status_code == 404 and "5" in unknown.json()["detail"]
    post(client, "/api/v1/bluesky", hyperion_start())
    (dcid,) = [1]  # the first collection the gateway created
    found = client.get(f"/api/v1/collections/{dcid}/results", headers=headers)
    assert found.status_code == 200, found.text
    assert found.json()["collection"]["visit"] == "cm40607-3"
    assert found.json()["jobs"] == []


def test_the_docs_table_lists_every_ispyb_experiment_type() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "zocalo.md").read_text()
    for ispyb_type in ISPYB_EXPERIMENT_TYPES:
        assert f"| `{ispyb_type}`" in page, ispyb_type
