"""Outbox bookkeeping and the drainer's order, retries and give-up rules.

The drainer talks to Prefect over HTTP; here an httpx MockTransport plays a Prefect that
is down, busy (503) or refusing (422). The real server is exercised in test_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.outbox import EMITTED, FAILED, PENDING, Outbox


def announcement(number: int) -> CollectionEvent:
    return CollectionEvent(
        event_id=f"evt-{number}",
        kind="finished",
        technique="mx",
        experiment_type="rotation",
        beamline="i03",
        visit="mx1-1",
        collection_id=number,
        data_files=["/data/x_master.h5"],
    )  # type: ignore[arg-type]


def filled_outbox(tmp_path: Path, n: int = 3) -> Outbox:
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    for number in range(1, n + 1):
        outbox.add(announcement(number), b"{}", event_id=f"evt-{number}", source="daq")
    return outbox


def drain(outbox: Outbox, handler: httpx.MockTransport) -> bool:
    async def go() -> bool:
        async with httpx.AsyncClient(transport=handler) as client:
            return await Drainer(outbox, "http://prefect/api").drain_once(client)

    return asyncio.run(go())


def test_events_are_emitted_in_arrival_order(tmp_path: Path) -> None:
    outbox = filled_outbox(tmp_path)
    seen: list[str] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/events"
        seen.extend(e["payload"]["collection"]["event_id"] for e in json.loads(request.content))
        return httpx.Response(204)

    assert drain(outbox, httpx.MockTransport(prefect)) is True
    assert seen == ["evt-1", "evt-2", "evt-3"]
    assert [r.status for r in outbox.list()] == [EMITTED] * 3


def test_busy_prefect_keeps_events_pending_and_stops_to_keep_order(tmp_path: Path) -> None:
    outbox = filled_outbox(tmp_path)
    calls: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)[0]["payload"]["collection"]["event_id"])
        return httpx.Response(503, text="database is locked")

    assert drain(outbox, httpx.MockTransport(busy)) is False
    assert calls == ["evt-1"]  # never skipped ahead
    rows = outbox.list()
    assert [r.status for r in rows] == [PENDING] * 3
    assert rows[0].attempts == 1 and "503" in (rows[0].last_error or "")


def test_unreachable_prefect_keeps_events_pending(tmp_path: Path) -> None:
    outbox = filled_outbox(tmp_path, 1)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert drain(outbox, httpx.MockTransport(down)) is False
    assert outbox.pending()[0].last_error is not None


def test_refused_event_is_failed_and_the_rest_go_on(tmp_path: Path) -> None:
    outbox = filled_outbox(tmp_path)

    def refuse_second(request: httpx.Request) -> httpx.Response:
        event_id = json.loads(request.content)[0]["payload"]["collection"]["event_id"]
        return httpx.Response(422 if event_id == "evt-2" else 204)

    assert drain(outbox, httpx.MockTransport(refuse_second)) is True
    assert [r.status for r in outbox.list()] == [EMITTED, FAILED, EMITTED]
    assert outbox.requeue() == 1
    assert [r.event_id for r in outbox.pending()] == ["evt-2"]


def test_re_emission_reuses_the_prefect_event_id(tmp_path: Path) -> None:
    outbox = filled_outbox(tmp_path, 1)
    ids: list[str] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)[0]["id"])
        return httpx.Response(204)

    drain(outbox, httpx.MockTransport(prefect))
    outbox.requeue(["evt-1"])
    drain(outbox, httpx.MockTransport(prefect))
    assert len(ids) == 2 and ids[0] == ids[1] == str(announcement(1).prefect_event_id)
