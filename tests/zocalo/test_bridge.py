"""The Zocalo bridge on this machine's RabbitMQ, with dodal's own ZocaloTrigger sending.

The bridge runs in a thread here (the real consumer, transport and outbox; SQLite LIMS
and outbox); Prefect is not needed for what a trigger becomes (an outbox event).
The crash test with a real process kill, and the manual runs `zocalo.go` asks for, are
in tests/e2e/test_zocalo.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dodal.devices.zocalo import ZocaloStartInfo, ZocaloTrigger
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.handled import HandledPairs
from prefect_beamline.gateway.outbox import Outbox, StoredEvent
from prefect_beamline.lims import Lims
from prefect_beamline.zocalo.bridge import Delivery, ReceiptRow, Receipts, Rejected, ZocaloBridge
from prefect_beamline.zocalo.routing import RoutingTable, UnknownRecipe
from prefect_beamline.zocalo.transport import (
    display,
    ensure_queue,
    pika_transport,
    transport_options,
)
from tests.helpers import collection_event
from tests.rabbit import TRIGGER_ENVIRONMENT, amqp_url, declare_with_dead_letters

CLOSED_PORT_API = "http://127.0.0.1:9/api"
RECIPE_QUEUE = "processing_recipe"
DCID = 4711


@pytest.fixture
def lims(tmp_path: Path) -> Iterator[Lims]:
    """A LIMS holding collection 4711 (rotation, written by Hyperion: SAD)."""
    client = Lims(f"sqlite:///{tmp_path / 'lims.db'}")
    client.create_schema()
    client.record_data_collection(collection_event(DCID, experiment_type="rotation"))
    set_experiment_type(client, DCID, "SAD")
    yield client
    client.close()


def set_experiment_type(lims: Lims, dcid: int, ispyb_type: str) -> None:
    from sqlalchemy import update

    from prefect_beamline.lims.schema import DataCollection, DataCollectionGroup

    with lims.transaction(write=True) as session:
        group_id = session.get_one(DataCollection, dcid).dataCollectionGroupId
        session.execute(
            update(DataCollectionGroup)
            .where(DataCollectionGroup.dataCollectionGroupId == group_id)
            .values(experimentType=ispyb_type)
        )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield box
    box.close()


def make_bridge(outbox: Outbox, lookup: Any, routes: dict[str, str] | None = None) -> ZocaloBridge:
    return ZocaloBridge(
        outbox=outbox,
        lookup=lookup,
        routing=RoutingTable(routes or {"mimas": "automatic"}),
        handled=HandledPairs.from_prefect_yaml(),
        api_url=CLOSED_PORT_API,
    )


@pytest.fixture
def consuming(
    rabbit_vhost: str,
) -> Iterator[Callable[[ZocaloBridge, str], Callable[[], int]]]:
    """Start a bridge consuming a queue of the session vhost in a thread; returns a
    function counting the connections it made. Stopped after the test."""
    stops: list[tuple[threading.Event, threading.Thread]] = []
    url = amqp_url(rabbit_vhost)

    def start(bridge: ZocaloBridge, queue: str, failures: int = 0) -> Callable[[], int]:
        attempts = [0]

        def connect() -> Any:
            attempts[0] += 1
            if attempts[0] <= failures:
                raise ConnectionError("RabbitMQ is down (test)")
            ensure_queue(url, queue)
            transport = pika_transport(url)
            transport.connect()
            return transport

        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=bridge.serve, args=(connect, queue, stop), kwargs={"ready": ready.set}
        )
        thread.start()
        stops.append((stop, thread))
        assert ready.wait(60), "the bridge did not start consuming"
        return lambda: attempts[0]

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(30)


def send(rabbit_vhost: str, queue: str, message: dict[str, Any], **headers: str) -> None:
    """As dodal and zocalo.go send: workflows' PikaTransport, JSON, their headers."""
    transport = pika_transport(amqp_url(rabbit_vhost))
    transport.connect()
    try:
        transport.send(queue, message, headers={"zocalo.go.user": "i03-user", **headers})
    finally:
        transport.disconnect()


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def rows(outbox: Outbox) -> list[StoredEvent]:
    return outbox.list()


def queue_depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def unique_queue() -> str:
    return f"bridge-test-{uuid.uuid4().hex[:8]}"


# -- routing and configuration ------------------------------------------------------------


def test_recipe_routes_to_automatic_or_its_deployment() -> None:
    table = RoutingTable.with_deployments(
        {"mimas": "automatic", "fast-dp": "mx-processing/mx-rotation"},
        {"mx-gridscan": "mx-processing/mx-gridscan"},
    )
    mimas, fast_dp, grid = table.route(["mimas", "fast-dp", "mx-gridscan"])
    assert mimas.automatic and mimas.deployment is None
    assert fast_dp.deployment == "mx-processing/mx-rotation"
    assert grid.deployment == "mx-processing/mx-gridscan"


def test_unknown_recipe_is_named_with_the_known_ones() -> None:
    table = RoutingTable({"mimas": "automatic"})
    with pytest.raises(
        UnknownRecipe, match="recipe 'xia2-dials' is not in the routing table.*mimas"
    ):
        table.route(["mimas", "xia2-dials"])


def test_amqp_url_configures_the_transport_and_hides_the_password() -> None:
    options = transport_options("amqp://zocalo:s3cret@rabbit.facility:5673/zocalo%2Flive")
    assert options == {
        "--rabbit-host": "rabbit.facility",
        "--rabbit-port": "5673",
        "--rabbit-user": "zocalo",
        "--rabbit-pass": "s3cret",
        "--rabbit-vhost": "zocalo/live",
    }
    assert transport_options("amqp://guest:guest@localhost/")["--rabbit-vhost"] == "/"
    assert "s3cret" not in display("amqp://zocalo:s3cret@rabbit.facility:5673/")
    with pytest.raises(ValueError, match="amqp://"):
        transport_options("http://rabbit.facility/")


# -- what a message becomes -----------------------------------------------------------------


def test_dodal_trigger_start_and_end_are_stored_and_acked(
    rabbit_vhost: str,
    zocalo_config: Path,
    outbox: Outbox,
    lims: Lims,
    consuming: Any,
    channel: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZOCALO_CONFIG", str(zocalo_config))
    consuming(make_bridge(outbox, lims.get_collection), RECIPE_QUEUE)
    trigger = ZocaloTrigger(TRIGGER_ENVIRONMENT)
    trigger.run_start(ZocaloStartInfo(DCID, "/dev/shm/eiger/xtal_1", 0, 100, 0))
    trigger.run_end(DCID)

    stored = wait_for(lambda: len(rows(outbox)) == 2 and rows(outbox))
    start, end = (row.event for row in stored)
    assert (start.event_id, end.event_id) == (f"zocalo-{DCID}-start-0", f"zocalo-{DCID}-end")
    # Hyperion's SAD is an MX rotation; the frames of the start become its image range.
    assert (end.technique, end.experiment_type, end.kind.value) == ("mx", "rotation", "finished")
    assert start.image_range == (1, 100)
    body = json.loads(stored[1].raw_body)
    assert body["message"] == {
        "recipes": ["mimas"],
        "parameters": {"event": "end", "ispyb_dcid": DCID},
    }
    assert set(body["headers"]) == {"zocalo.go.user", "zocalo.go.host"}
    wait_for(lambda: queue_depth(channel, RECIPE_QUEUE) == 0)


def test_resent_trigger_is_a_duplicate(
    rabbit_vhost: str, outbox: Outbox, lims: Lims, consuming: Any, channel: Any
) -> None:
    queue = unique_queue()
    consuming(make_bridge(outbox, lims.get_collection), queue)
    message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID, "event": "end"}}
    send(rabbit_vhost, queue, message)
    send(rabbit_vhost, queue, message)
    wait_for(lambda: queue_depth(channel, queue) == 0 and len(rows(outbox)) == 1)
    time.sleep(0.3)
    assert [row.event_id for row in rows(outbox)] == [f"zocalo-{DCID}-end"]


def test_unknown_recipe_is_dead_lettered_and_logged_by_name(
    rabbit_vhost: str,
    outbox: Outbox,
    lims: Lims,
    consuming: Any,
    channel: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = unique_queue()
    dlq = declare_with_dead_letters(channel, queue)
    consuming(make_bridge(outbox, lims.get_collection), queue)
    with caplog.at_level(logging.ERROR, logger="prefect_beamline.zocalo"):
        send(rabbit_vhost, queue, {"recipes": ["xia2-dials"], "parameters": {"ispyb_dcid": DCID}})
        wait_for(lambda: queue_depth(channel, dlq) == 1)
    assert "recipe 'xia2-dials' is not in the routing table" in caplog.text
    assert rows(outbox) == []
    _method, _, body = channel.basic_get(dlq, auto_ack=True)
    assert json.loads(body)["recipes"] == ["xia2-dials"]


def test_collection_no_deployment_processes_is_dead_lettered_naming_the_pair(
    rabbit_vhost: str,
    outbox: Outbox,
    lims: Lims,
    consuming: Any,
    channel: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_experiment_type(lims, DCID, "Still")  # ISPyB's stills: mx/still, not deployed
    queue = unique_queue()
    dlq = declare_with_dead_letters(channel, queue)
    consuming(make_bridge(outbox, lims.get_collection), queue)
    with caplog.at_level(logging.ERROR, logger="prefect_beamline.zocalo"):
        send(
            rabbit_vhost,
            queue,
            {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID, "event": "end"}},
        )
        wait_for(lambda: queue_depth(channel, dlq) == 1)
    assert "technique 'mx' with experiment_type 'still'" in caplog.text
    assert "mx/gridscan, mx/rotation" in caplog.text
    assert rows(outbox) == []


def test_rabbitmq_down_is_retried_until_it_is_back(
    rabbit_vhost: str, outbox: Outbox, lims: Lims, consuming: Any, channel: Any
) -> None:
    queue = unique_queue()
    connections = consuming(make_bridge(outbox, lims.get_collection), queue, failures=2)
    assert connections() == 3  # two refused, backing off, then consuming
    send(
        rabbit_vhost,
        queue,
        {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID, "event": "end"}},
    )
    wait_for(lambda: len(rows(outbox)) == 1)


def test_lims_down_keeps_the_message_unacked_until_it_is_stored(
    rabbit_vhost: str, outbox: Outbox, lims: Lims, consuming: Any, channel: Any
) -> None:
    calls = [0]

    def flaky_lookup(dcid: int) -> Any:
        calls[0] += 1
        if calls[0] <= 2:
            raise OperationalError("SELECT", {}, Exception("LIMS is down (test)"))
        return lims.get_collection(dcid)

    queue = unique_queue()
    consuming(make_bridge(outbox, flaky_lookup), queue)
    send(
        rabbit_vhost,
        queue,
        {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID, "event": "end"}},
    )
    wait_for(lambda: len(rows(outbox)) == 1)
    assert calls[0] == 3
    wait_for(lambda: queue_depth(channel, queue) == 0)


def test_zocalo_go_is_a_new_request_each_time_and_a_redelivery_is_the_same(
    outbox: Outbox, lims: Lims
) -> None:
    bridge = make_bridge(outbox, lims.get_collection)
    message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID}}  # zocalo.go -r mimas
    headers = {"zocalo.go.user": "scientist", "zocalo.go.host": "ws001"}

    def deliver(redelivered: bool) -> list[str]:
        _summary, receipts = bridge.handle(Delivery(headers, message, redelivered))
        return receipts

    first = deliver(redelivered=False)
    again = deliver(redelivered=True)  # the bridge died before acking the first
    assert again == first
    assert bridge.receipts.count() == 1
    for event_id in first:
        bridge.receipts.acked(event_id)
    assert bridge.receipts.count() == 0  # receipts are not kept once acked
    second = deliver(redelivered=False)  # zocalo.go typed again: a new request
    assert second != first
    events = [row.event for row in rows(outbox)]
    assert [e.event_id for e in events] == first + second
    assert all(e.kind.value == "finished" for e in events)


def test_malformed_message_is_rejected_naming_the_field(outbox: Outbox, lims: Lims) -> None:
    bridge = make_bridge(outbox, lims.get_collection)
    with pytest.raises(Rejected, match="parameters.ispyb_dcid"):
        bridge.handle(Delivery({}, {"recipes": ["mimas"], "parameters": {"event": "end"}}, False))
    with pytest.raises(Rejected, match="not a JSON object"):
        bridge.handle(Delivery({}, "processing please", False))


def test_mapping_is_the_gateway_s(outbox: Outbox, lims: Lims) -> None:
    """The bridge's event is the one /api/v1/zocalo makes for the same message."""
    from prefect_beamline.gateway.mapping import ZocaloTrigger, zocalo_to_event

    message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": DCID, "event": "end"}}
    make_bridge(outbox, lims.get_collection).handle(Delivery({}, message, False))
    (row,) = rows(outbox)
    expected: CollectionEvent = zocalo_to_event(
        ZocaloTrigger.model_validate(message), lims.get_collection
    )
    assert row.event.model_dump(exclude={"timestamp"}) == expected.model_dump(exclude={"timestamp"})


def test_a_receipt_left_unacked_goes_after_the_retention(outbox: Outbox) -> None:
    """A zocalo.go request rejected after its receipt was written is never acked."""
    receipts = Receipts(outbox.engine, retention=timedelta(hours=1))
    left = receipts.event_id("a" * 64, False, lambda: "zocalo-go-left")
    kept = receipts.event_id("b" * 64, False, lambda: "zocalo-go-kept")
    with Session(outbox.engine) as session, session.begin():
        session.execute(
            update(ReceiptRow)
            .where(ReceiptRow.event_id == left)
            .values(received_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=2))
        )
    receipts.acked(receipts.event_id("c" * 64, False, lambda: "zocalo-go-acked"))
    with Session(outbox.engine) as session:
        assert session.scalars(select(ReceiptRow.event_id)).all() == [kept]
