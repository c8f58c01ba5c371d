"""Outbox bookkeeping, and the drainer's order, batching, backoff and give-up rules.

The outbox tests run on SQLite and on every configured database server (the `lims_url`
fixture of conftest gives an empty database of each kind). The drainer talks to Prefect
over HTTP; here an httpx MockTransport plays a Prefect that is down, busy (503),
misconfigured (401) or refusing an event (422). The real server: test_gateway_prefect.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.emitter import Backoff, Drainer, PrefectEmitter
from prefect_beamline.gateway.outbox import EMITTED, FAILED, PENDING, SKIPPED, Outbox

Handler = Callable[[httpx.Request], httpx.Response]


def announcement(number: int) -> CollectionEvent:
    return CollectionEvent.model_validate(
        {
            "event_id": f"evt-{number}",
            "kind": "finished",
            "technique": "mx",
            "experiment_type": "rotation",
            "beamline": "i03",
            "visit": "mx1-1",
            "collection_id": number,
            "data_files": ["/data/x_master.h5"],
        }
    )


@pytest.fixture
def outbox(lims_url: str) -> Iterator[Outbox]:
    """An outbox in an empty database: SQLite, and PostgreSQL/MariaDB when configured."""
    box = Outbox(lims_url)
    yield box
    box.close()


@pytest.fixture
def sqlite_outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield box
    box.close()


def fill(outbox: Outbox, n: int) -> None:
    for number in range(1, n + 1):
        outbox.add(announcement(number), b"{}")


def emitted_ids(request: httpx.Request) -> list[str]:
    return [e["payload"]["collection"]["event_id"] for e in json.loads(request.content)]


def drain(outbox: Outbox, handler: Handler, batch_size: int = 20) -> bool:
    async def go() -> bool:
        emitter = PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(handler))
        async with emitter:
            return await Drainer(outbox, emitter, batch_size=batch_size).drain_once()

    return asyncio.run(go())


def test_add_gives_increasing_sequences_and_keeps_the_raw_body(outbox: Outbox) -> None:
    raw = '{"note": "Ångström"}'.encode()
    first, new_first = outbox.add(announcement(1), raw)
    second, new_second = outbox.add(announcement(2), b"{}")
    assert new_first and new_second and second > first
    stored = outbox.get("evt-1")
    assert stored is not None and stored.raw_body == raw and stored.status == PENDING
    assert stored.event == announcement(1).model_copy(update={"timestamp": stored.event.timestamp})


def test_repeated_event_id_is_stored_once(outbox: Outbox) -> None:
    sequence, is_new = outbox.add(announcement(1), b"first")
    again, is_new_again = outbox.add(announcement(1), b"second")
    assert is_new and not is_new_again and again == sequence
    rows = outbox.list()
    assert len(rows) == 1 and rows[0].raw_body == b"first"


def test_concurrent_deliveries_of_one_event_store_one_row(sqlite_outbox: Outbox) -> None:
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(6)

    def deliver() -> None:
        barrier.wait()
        results.append(sqlite_outbox.add(announcement(7), b"{}"))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(is_new for _, is_new in results) == [False] * 5 + [True]
    assert len({sequence for sequence, _ in results}) == 1
    assert len(sqlite_outbox.list()) == 1


def test_failure_bookkeeping_counts_attempts_and_gives_up(outbox: Outbox) -> None:
    fill(outbox, 2)
    first, second = outbox.pending()
    outbox.record_failure([first.sequence], "503 database is locked", give_up=False)
    outbox.record_failure([first.sequence], "503 again", give_up=False)
    outbox.record_failure([second.sequence], "422 bad event", give_up=True)
    by_id = {row.event_id: row for row in outbox.list()}
    assert (by_id["evt-1"].status, by_id["evt-1"].attempts) == (PENDING, 2)
    assert by_id["evt-1"].last_error == "503 again"
    assert (by_id["evt-2"].status, by_id["evt-2"].attempts) == (FAILED, 1)
    assert outbox.counts() == {PENDING: 1, EMITTED: 0, FAILED: 1, SKIPPED: 0}


def test_requeue_defaults_to_failed_events_and_takes_named_ones(outbox: Outbox) -> None:
    fill(outbox, 3)
    one, two, _ = outbox.pending()
    outbox.mark_emitted([one.sequence])
    outbox.record_failure([two.sequence], "refused", give_up=True)
    assert outbox.requeue() == 1
    assert [r.event_id for r in outbox.pending()] == ["evt-2", "evt-3"]
    assert outbox.pending()[0].last_error is None
    assert outbox.requeue(["evt-1", "no-such-event"]) == 1
    assert [r.event_id for r in outbox.pending()] == ["evt-1", "evt-2", "evt-3"]


def test_unknown_status_is_refused_by_name(sqlite_outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="'done'.*pending"):
        sqlite_outbox.list("done")


def test_stored_events_survive_a_new_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    writer = Outbox(url)
    writer.add(announcement(1), b"{}")
    writer.close()
    assert [r.event_id for r in Outbox(url).pending()] == ["evt-1"]


def test_events_are_emitted_in_arrival_order_in_batches(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 5)
    posts: list[list[str]] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/events"
        posts.append(emitted_ids(request))
        return httpx.Response(204)

    assert drain(sqlite_outbox, prefect, batch_size=2) is True
    assert posts == [["evt-1", "evt-2"], ["evt-3", "evt-4"], ["evt-5"]]
    assert [r.status for r in sqlite_outbox.list()] == [EMITTED] * 5


@pytest.mark.parametrize(
    ("answer", "error"),
    [(503, "503"), (500, "500"), (401, "401"), (404, "404")],
    ids=["busy", "server-error", "credentials", "wrong-url"],
)
def test_prefect_that_cannot_take_events_keeps_them_pending_in_order(
    sqlite_outbox: Outbox, answer: int, error: str
) -> None:
    fill(sqlite_outbox, 3)
    posts: list[list[str]] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        posts.append(emitted_ids(request))
        return httpx.Response(answer, text="database is locked")

    assert drain(sqlite_outbox, prefect, batch_size=2) is False
    assert posts == [["evt-1", "evt-2"]]  # stopped at once, never skipped ahead
    rows = sqlite_outbox.list()
    assert [r.status for r in rows] == [PENDING] * 3
    assert [r.attempts for r in rows] == [1, 1, 0]
    assert error in (rows[0].last_error or "")


def test_unreachable_prefect_keeps_events_pending(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 1)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert drain(sqlite_outbox, down) is False
    assert "unreachable" in (sqlite_outbox.pending()[0].last_error or "")


def test_refused_event_is_failed_and_the_others_go_on_in_order(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 3)
    accepted: list[str] = []

    def refuse_second(request: httpx.Request) -> httpx.Response:
        ids = emitted_ids(request)
        if "evt-2" in ids:
            return httpx.Response(422, json={"detail": "bad event"})
        accepted.extend(ids)
        return httpx.Response(204)

    assert drain(sqlite_outbox, refuse_second) is True
    assert accepted == ["evt-1", "evt-3"]
    rows = sqlite_outbox.list()
    assert [r.status for r in rows] == [EMITTED, FAILED, EMITTED]
    assert "422" in (rows[1].last_error or "") and "bad event" in (rows[1].last_error or "")


def test_re_emission_reuses_the_prefect_event_id(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 1)
    ids: list[str] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)[0]["id"])
        return httpx.Response(204)

    drain(sqlite_outbox, prefect)
    sqlite_outbox.requeue(["evt-1"])
    drain(sqlite_outbox, prefect)
    assert ids == [str(announcement(1).prefect_event_id)] * 2


def test_backoff_doubles_from_its_start_up_to_its_cap() -> None:
    delays = [Backoff(start_s=0.2, max_s=10.0).after(n) for n in range(1, 9)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0])


def test_drainer_retries_with_backoff_until_prefect_comes_back(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 2)
    attempts: list[float] = []
    prefect_up = threading.Event()

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(time.monotonic())
        if len(attempts) == 4:
            prefect_up.set()
        return httpx.Response(204 if prefect_up.is_set() else 503)

    async def go() -> Drainer:
        emitter = PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(flaky))
        drainer = Drainer(sqlite_outbox, emitter, backoff=Backoff(start_s=0.05, max_s=0.2))
        task = asyncio.create_task(drainer.run())
        started = time.monotonic()
        while sqlite_outbox.counts()[PENDING] and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        task.cancel()
        return drainer

    drainer = asyncio.run(go())
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert [r.status for r in sqlite_outbox.list()] == [EMITTED, EMITTED]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2 * 0.99  # doubled, capped
    assert drainer.status.prefect_reachable is True and drainer.status.emitted == 2
    assert drainer.status.last_error is not None and "503" in drainer.status.last_error


def test_woken_drainer_emits_a_new_event_at_once(sqlite_outbox: Outbox) -> None:
    emitted_at: list[float] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        emitted_at.append(time.monotonic())
        return httpx.Response(204)

    async def go() -> float:
        emitter = PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(prefect))
        drainer = Drainer(sqlite_outbox, emitter, idle_poll_s=60.0)
        task = asyncio.create_task(drainer.run())
        await asyncio.sleep(0.1)  # idle: nothing pending
        sqlite_outbox.add(announcement(1), b"{}")
        accepted = time.monotonic()
        drainer.wake()
        while not emitted_at and time.monotonic() - accepted < 5:
            await asyncio.sleep(0.005)
        task.cancel()
        return accepted

    accepted = asyncio.run(go())
    assert emitted_at and emitted_at[0] - accepted < 0.5
