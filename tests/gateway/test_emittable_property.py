"""Property: every body the gateway accepts becomes an event Prefect takes; every other
body gets a 4xx, never a 5xx.

Hypothesis writes JSON text itself, so it can spell what `json.dumps` never writes:
`1e400`, `-1e999`, `NaN`, `Infinity`, escaped lone surrogates, U+0000, 64-bit edges,
nesting hundreds deep, timestamps at the ends of the calendar. "Prefect takes it" is
checked as Prefect's own code does: the drainer's JSON (`allow_nan=False`, UTF-8), the
client's and the server's event schemas, the server's size limit, and orjson, which the
server's trigger service parses events with. `test_emittable_prefect` sends the bodies at
every limit to a real Prefect server.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from prefect.events.schemas.events import Event as ClientEvent
from prefect.server.events.schemas.events import Event as ServerEvent
from prefect.settings import PREFECT_EVENTS_MAXIMUM_SIZE_BYTES

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import TOKEN, event_body, make_app, make_settings

EXAMPLES = 80  # per endpoint: 240 requests, about 10 s


def describe_any(dcid: int) -> CollectionDescription:
    """A LIMS that knows every collection id it is asked about."""
    return CollectionDescription(
        collection_id=dcid,
        beamline="i03",
        visit="mx12345-1",
        technique="mx",
        experiment_type="rotation",
        data_files=["/data/i03/x_master.h5"],
        image_range=(1, 100),
        grid=None,
    )


class Gateway:
    """One app and outbox for all examples, and the answers seen."""

    def __init__(self, settings: BeamlineSettings, client: TestClient) -> None:
        self.client = client
        self.outbox = Outbox(settings.resolved_outbox_url)
        self.statuses: Counter[int] = Counter()

    def post(self, path: str, text: str) -> Any:
        response = self.client.post(
            path,
            content=text.encode("utf-8", "surrogatepass"),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.statuses[response.status_code] += 1
        return response


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    settings = make_settings(tmp_path_factory.mktemp("gateway"), gateway_max_body_bytes=2**20)
    app = make_app(settings, lookup=describe_any)
    with TestClient(app) as client:
        gateway = Gateway(settings, client)
        yield gateway
        gateway.outbox.close()


# -- JSON text, including what json.dumps never writes ----------------------------------

INT_EDGES = [2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
NASTY_TEXT = ["\ud800", "a\udfffb", "\x00", "\ud83d\ude00", "é\u2028", "\U0010ffff", ""]


@dataclass(frozen=True)
class Spelled:
    """A number written as given: 1e400, NaN, -1e999, ..."""

    spelling: str


NON_FINITE = st.sampled_from(["1e400", "-1e999", "NaN", "Infinity", "-Infinity", "1E+309"]).map(
    Spelled
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from(INT_EDGES),
    st.floats(allow_nan=False, allow_infinity=False),
    NON_FINITE,
    st.text(st.characters(exclude_categories=()), max_size=8),
    st.sampled_from(NASTY_TEXT),
)
keys = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=6), st.sampled_from(NASTY_TEXT)
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deeply_nested(draw: st.DrawFn) -> Any:
    value: Any = draw(scalars)
    for level in range(draw(st.integers(1, 300))):
        value = {"k": value} if level % 2 else [value]
    return value


parameters = st.dictionaries(keys, st.one_of(json_values, deeply_nested()), max_size=4)


def to_json(value: Any, ascii_only: bool = True) -> str:
    """JSON text for `value`; lone surrogates escaped (`\\ud800`) as a DAQ's encoder
    writes them, or, with `ascii_only=False`, left raw (sent as their UTF-8-like bytes)."""
    if isinstance(value, Spelled):
        return value.spelling
    if isinstance(value, dict):
        members = (
            f"{to_json(str(k), ascii_only)}: {to_json(v, ascii_only)}" for k, v in value.items()
        )
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_json(item, ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.builds(
        lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
        st.datetimes(),
        st.integers(-23 * 60, 23 * 60),
    ),
    st.datetimes(),
).map(datetime.isoformat)
collection_ids = st.one_of(
    st.integers(1, 10**6), st.integers(-5, 2**40), st.sampled_from(INT_EDGES)
)
grids = st.fixed_dictionaries(
    {"steps_x": collection_ids, "steps_y": st.integers(1, 10)},
    optional={
        "dx_um": st.one_of(st.floats(allow_nan=False), NON_FINITE),
        "dy_um": st.one_of(st.floats(min_value=0.1, max_value=100), NON_FINITE),
    },
)
event_ids = st.one_of(
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=12),
    st.sampled_from(NASTY_TEXT),
)


@st.composite
def collection_bodies(draw: st.DrawFn) -> str:
    body: dict[str, Any] = event_body(
        event_id=draw(event_ids),
        collection_id=draw(collection_ids),
        processing_parameters=draw(parameters),
    )
    if draw(st.booleans()):
        body["timestamp"] = draw(timestamps)
    if draw(st.booleans()):
        body["grid"] = draw(grids)
    if draw(st.booleans()):
        body["image_range"] = [draw(collection_ids), draw(collection_ids)]
    return to_json(body, draw(st.booleans()))


@st.composite
def bluesky_starts(draw: st.DrawFn) -> str:
    doc: dict[str, Any] = {
        "uid": draw(event_ids),
        "technique": "mx",
        "experiment_type": "rotation",
        "beamline": "i04",
        "visit": "mx999-2",
        "data_collection_id": draw(collection_ids),
        "data_files": "/data/i04/x_master.h5",
        "processing": draw(parameters),
        "time": draw(
            st.one_of(st.floats(allow_nan=False), NON_FINITE, st.integers(-(2**64), 2**64))
        ),
    }
    doc |= draw(st.dictionaries(keys, json_values, max_size=2))
    return to_json({"name": "start", "doc": doc}, draw(st.booleans()))


@st.composite
def zocalo_messages(draw: st.DrawFn) -> str:
    extra = draw(st.dictionaries(keys, st.one_of(json_values, deeply_nested()), max_size=3))
    parameters = extra | {
        "ispyb_dcid": draw(collection_ids),
        "event": "end",
        "guid": draw(event_ids),
    }
    return to_json({"recipes": ["mimas"], "parameters": parameters}, draw(st.booleans()))


# -- What Prefect takes ------------------------------------------------------------------


def assert_prefect_takes(event: CollectionEvent) -> None:
    """The checks the event meets on its way: the drainer's encoding, Prefect's client and
    server schemas, the server's size limit, and orjson (64-bit integers, 254 levels),
    which Prefect's server encodes and parses events with."""
    sent = json.dumps([event.to_prefect_event()], allow_nan=False).encode("utf-8")
    (client_view,) = json.loads(sent)
    ClientEvent.model_validate(client_view).model_dump_json()
    received = ServerEvent.model_validate(client_view).receive()
    assert received.occurred.astimezone(UTC).year >= 1
    stored = received.model_dump_json().encode()
    assert len(stored) <= PREFECT_EVENTS_MAXIMUM_SIZE_BYTES.value()
    assert orjson.loads(orjson.dumps(received.model_dump(mode="json"))) == json.loads(stored)
    assert all(
        math.isfinite(number)
        for number in numbers_in(json.loads(stored))
        if isinstance(number, float)
    )


def numbers_in(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers_in(item)
    elif isinstance(value, int | float):
        yield value


def check_answer(gateway: Gateway, response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code in (200, 202):
        if response.json().get("status") == "ignored":
            return
        row = gateway.outbox.get(response.json()["event_id"])
        assert row is not None
        assert_prefect_takes(row.event)
    else:
        assert 400 <= response.status_code < 500
        json.dumps(response.json()).encode("utf-8")  # the refusal itself is readable


BOUNDED = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)


@pytest.mark.parametrize(
    ("path", "bodies"),
    [
        ("/api/v1/collections", collection_bodies()),
        ("/api/v1/bluesky", bluesky_starts()),
        ("/api/v1/zocalo", zocalo_messages()),
    ],
)
def test_every_accepted_body_becomes_an_event_prefect_takes(
    gateway: Gateway, path: str, bodies: st.SearchStrategy[str]
) -> None:
    before = Counter(gateway.statuses)

    @hypothesis.given(text=bodies)
    @BOUNDED
    def accepted_means_emittable(text: str) -> None:
        check_answer(gateway, gateway.post(path, text))

    accepted_means_emittable()
    seen = gateway.statuses - before
    assert seen[202] > 0 and seen[422] > 0, (
        f"{path}: examples never both accepted and refused: {seen}"
    )
