"""Accepted means emittable: the gateway refuses at the door, with a 4xx naming the field,
every body whose event the drainer or Prefect could not take later, on every endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefect_beamline.events import LIMS_INTEGER_MAX
from prefect_beamline.gateway.emittable import MAX_DEPTH
from prefect_beamline.lims import Lims
from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import TOKEN, event_body, make_app, make_settings, stored

ROOMY_LIMIT = 4_000_000  # bodies larger than Prefect's 1.5 MB event limit get through


@pytest.fixture
def settings(tmp_path: Path) -> BeamlineSettings:
    return make_settings(tmp_path, gateway_max_body_bytes=ROOMY_LIMIT)


@pytest.fixture
def client(settings: BeamlineSettings) -> Iterator[TestClient]:
    lims = Lims(settings.resolved_lims_url)
    lims.create_schema()
    try:
        with TestClient(make_app(settings, lookup=lims.get_collection)) as test_client:
            yield test_client
    finally:
        lims.close()


def post_raw(client: TestClient, text: str | bytes, path: str = "/api/v1/collections") -> Any:
    content = text.encode() if isinstance(text, str) else text
    return client.post(path, content=content, headers={"Authorization": f"Bearer {TOKEN}"})


def with_field(name: str, raw_json: str, **changes: Any) -> str:
    """An event body with `name` set to `raw_json` verbatim (spellings json.dumps avoids)."""
    body = json.dumps(event_body(**changes))
    return body[:-1] + f', "{name}": {raw_json}}}'


def refused_fields(response: httpx.Response, status: int = 422) -> list[str]:
    assert response.status_code == status, response.text
    return [error["field"] for error in response.json()["detail"]]


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON value `depth` levels of objects and arrays deep, alternating."""
    opening = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + leaf + closing


GRID_1E400 = '{"steps_x": 2, "steps_y": 2, "dx_um": 1e400, "dy_um": 10.0}'


@pytest.mark.parametrize(
    ("name", "raw", "field"),
    [
        ("grid", GRID_1E400, "grid.dx_um"),
        ("processing_parameters", '{"sigma": -1e999}', "processing_parameters.sigma"),
        ("processing_parameters", '{"a": [1, NaN]}', "processing_parameters.a.1"),
        ("processing_parameters", '{"b": {"c": Infinity}}', "processing_parameters.b.c"),
        ("processing_parameters", '{"d": -Infinity}', "processing_parameters.d"),
    ],
)
def test_non_finite_numbers_in_any_spelling_are_422_naming_the_field(
    client: TestClient, settings: BeamlineSettings, name: str, raw: str, field: str
) -> None:
    response = post_raw(client, with_field(name, raw))
    assert refused_fields(response) == [field]
    assert "finite" in response.json()["message"]
    assert stored(settings) == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"note": "\\ud800"}', "processing_parameters.note"),
        ('{"x": {"y": ["ok", "a\\udfffb"]}}', "processing_parameters.x.y.1"),
        ('{"\\udc00key": 1}', "processing_parameters.\\udc00key"),
    ],
)
def test_unpaired_surrogates_are_422_in_keys_and_values_at_any_depth(
    client: TestClient, settings: BeamlineSettings, raw: str, field: str
) -> None:
    response = post_raw(client, with_field("processing_parameters", raw))
    assert refused_fields(response) == [field]
    assert "surrogate" in response.json()["message"]
    assert stored(settings) == []


def test_surrogate_pairs_are_fine(client: TestClient, settings: BeamlineSettings) -> None:
    response = post_raw(client, with_field("processing_parameters", '{"note": "\\ud83d\\ude00"}'))
    assert response.status_code == 202, response.text
    (row,) = stored(settings)
    assert row.event.processing_parameters == {"note": "\U0001f600"}


def test_surrogate_bytes_in_the_raw_body_are_refused_too(client: TestClient) -> None:
    raw = with_field("processing_parameters", '{"note": "X"}').encode()
    raw = raw.replace(b'"X"', b'"' + "\ud800".encode("utf-8", "surrogatepass") + b'"')
    response = post_raw(client, raw)
    assert refused_fields(response) == ["processing_parameters.note"]


def test_nul_characters_are_422(client: TestClient, settings: BeamlineSettings) -> None:
    response = post_raw(client, with_field("processing_parameters", '{"note": "a\\u0000b"}'))
    assert refused_fields(response) == ["processing_parameters.note"]
    assert stored(settings) == []


def test_nesting_at_the_limit_is_accepted_and_one_deeper_is_422(
    client: TestClient, settings: BeamlineSettings
) -> None:
    # The body is level 1 and processing_parameters level 2.
    at_limit = post_raw(client, with_field("processing_parameters", nested(MAX_DEPTH - 1)))
    too_deep = post_raw(
        client, with_field("processing_parameters", nested(MAX_DEPTH), event_id="deeper")
    )
    assert at_limit.status_code == 202, at_limit.text
    (field,) = refused_fields(too_deep)
    assert field.startswith("processing_parameters.k.0")
    assert str(MAX_DEPTH) in too_deep.json()["message"]
    assert [row.event_id for row in stored(settings)] == ["i03-0042-end"]


@pytest.mark.parametrize("depth", [253, 255, 5_000, 100_000])
def test_depth_bombs_are_422_never_500(
    client: TestClient, settings: BeamlineSettings, depth: int
) -> None:
    response = post_raw(client, with_field("processing_parameters", nested(depth)))
    assert response.status_code == 422, response.text
    assert f"deeper than {MAX_DEPTH} levels" in response.json()["message"]
    bare = post_raw(client, "[" * depth + "]" * depth)
    assert bare.status_code == 422 and f"deeper than {MAX_DEPTH}" in bare.json()["message"]
    assert stored(settings) == []


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_outside_64_bits_are_422(
    client: TestClient, settings: BeamlineSettings, value: int
) -> None:
    response = post_raw(client, with_field("processing_parameters", f'{{"n": {value}}}'))
    assert refused_fields(response) == ["processing_parameters.n"]
    assert stored(settings) == []


def test_64_bit_integers_at_the_edges_are_accepted(
    client: TestClient, settings: BeamlineSettings
) -> None:
    edges = {"low": -(2**63), "high": 2**63 - 1}
    response = post_raw(client, json.dumps(event_body(processing_parameters=edges)))
    assert response.status_code == 202, response.text
    assert stored(settings)[0].event.processing_parameters == edges


def test_collection_id_beyond_the_lims_column_is_422(
    client: TestClient, settings: BeamlineSettings
) -> None:
    too_big = post_raw(client, json.dumps(event_body(collection_id=LIMS_INTEGER_MAX + 1)))
    image = post_raw(client, json.dumps(event_body(image_range=[1, LIMS_INTEGER_MAX + 1])))
    largest = post_raw(client, json.dumps(event_body(collection_id=LIMS_INTEGER_MAX)))
    assert refused_fields(too_big) == ["collection_id"]
    assert refused_fields(image) == ["image_range.1"]
    assert largest.status_code == 202


@pytest.mark.parametrize("dcid", [2**63, 2**31, 2**64 + 5])
def test_zocalo_dcid_out_of_range_is_422_not_503(
    client: TestClient, settings: BeamlineSettings, dcid: int
) -> None:
    message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": dcid, "event": "end"}}
    response = post_raw(client, json.dumps(message), "/api/v1/zocalo")
    assert refused_fields(response) == ["parameters.ispyb_dcid"]
    assert stored(settings) == []


def bluesky(name: str, **doc: Any) -> str:
    return json.dumps({"name": name, "doc": doc})


START = {
    "uid": "run-1",
    "technique": "mx",
    "experiment_type": "rotation",
    "beamline": "i04",
    "visit": "mx999-2",
    "data_collection_id": 77,
    "data_files": "/data/i04/x_master.h5",
}


@pytest.mark.parametrize("time", [1e20, -1e20, 253_402_300_800.0])
def test_bluesky_time_out_of_range_is_422_naming_it(
    client: TestClient, settings: BeamlineSettings, time: float
) -> None:
    start = post_raw(client, bluesky("start", **START, time=time), "/api/v1/bluesky")
    assert refused_fields(start) == ["doc.time"]
    accepted = post_raw(client, bluesky("start", **START, time=1_790_000_000.0), "/api/v1/bluesky")
    assert accepted.status_code == 202, accepted.text
    stop = {"uid": "stop-1", "run_start": "run-1", "exit_status": "success", "time": time}
    assert refused_fields(post_raw(client, bluesky("stop", **stop), "/api/v1/bluesky")) == [
        "doc.time"
    ]
    assert [row.event_id for row in stored(settings)] == ["run-1"]


def test_bluesky_document_with_a_non_finite_number_is_422(client: TestClient) -> None:
    raw = bluesky("start", **START, processing={"x": 1.0}).replace("1.0", "1e400")
    assert refused_fields(post_raw(client, raw, "/api/v1/bluesky")) == ["doc.processing.x"]


def test_event_larger_than_prefect_takes_is_413(
    client: TestClient, settings: BeamlineSettings
) -> None:
    body = json.dumps(event_body(processing_parameters={"note": "x" * 1_600_000}))
    response = post_raw(client, body)
    assert response.status_code == 413, response.text
    assert "PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES" in response.json()["detail"]
    assert stored(settings) == []


def test_many_flaws_are_refused_naming_the_first_few(client: TestClient) -> None:
    values = ", ".join(["1e400"] * 5_000)
    response = post_raw(client, with_field("processing_parameters", f'{{"v": [{values}]}}'))
    fields = refused_fields(response)
    assert 1 <= len(fields) <= 20 and fields[0] == "processing_parameters.v.0"


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_timestamp_without_a_utc_form_is_422(
    client: TestClient, settings: BeamlineSettings, timestamp: str
) -> None:
    response = post_raw(client, json.dumps(event_body(timestamp=timestamp)))
    assert refused_fields(response) == ["timestamp"]
    assert stored(settings) == []


def test_nul_is_refused_whatever_database_holds_the_outbox(tmp_path: Path, lims_url: str) -> None:
    """SQLite and MariaDB stored it (then Prefect lost the event); PostgreSQL cannot store
    it at all (psycopg2 raised ValueError: a 500)."""
    settings = make_settings(tmp_path, outbox_url=lims_url)
    with TestClient(make_app(settings)) as client:
        in_id = post_raw(client, json.dumps(event_body(event_id="i03-\u0000-end")))
        in_parameters = post_raw(
            client, json.dumps(event_body(processing_parameters={"note": "a\u0000b"}))
        )
        clean = post_raw(client, json.dumps(event_body()))
    assert refused_fields(in_id) == ["event_id"]
    assert refused_fields(in_parameters) == ["processing_parameters.note"]
    assert clean.status_code == 202
    assert [row.event_id for row in stored(settings)] == ["i03-0042-end"]
