"""Outbox bookkeeping, and the drainer's order, batching, backoff and give-up rules.

The outbox tests run on SQLite and on every configured database server (the `lims_url`
fixture of conftest gives an empty database of each kind). The drainer talks to Prefect
over HTTP; here an httpx MockTransport plays a Prefect that is down, busy (503),
misconfigured (401), refusing an event (422) or failing on one (500). The real server:
test_prefect.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import update

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.emitter import Backoff, Drainer, PrefectEmitter
from prefect_beamline.gateway.outbox import (
    EMITTED,
    FAILED,
    PENDING,
    SKIPPED,
    Outbox,
    OutboxRow,
    Submission,
    body_digest,
)
from prefect_beamline.gateway.writer import BUSY_WAITING, GroupCommitWriter

Handler = Callable[[httpx.Request], httpx.Response]


def announcement(
    number: int, collection_id: int | None = None, **changes: object
) -> CollectionEvent:
    return CollectionEvent.model_validate(
        {
            "event_id": f"evt-{number}",
            "kind": "finished",
            "technique": "mx",
            "experiment_type": "rotation",
            "beamline": "i03",
            "visit": "mx1-1",
            "collection_id": collection_id or number,
            "data_files": ["/data/x_master.h5"],
            **changes,
        }
    )


# A path no UTF-8 encoder takes (a lone surrogate): the event validates and is stored,
# but its Prefect event cannot be serialised. The door refuses such bodies now; an event
# stored before, or any other un-emittable event, must not block the others.
POISON_PATH = "/data/\udc80_master.h5"


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


def drain(outbox: Outbox, handler: Handler, batch_size: int = 20, **options: Any) -> bool:
    async def go() -> bool:
        emitter = PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(handler))
        async with emitter:
            drainer = Drainer(outbox, emitter, batch_size=batch_size, **options)
            return await drainer.drain_once()

    return asyncio.run(go())


def come_due(outbox: Outbox) -> None:
    """Make every backed-off event due now (instead of waiting out its backoff)."""
    with outbox.engine.begin() as connection:
        connection.execute(update(OutboxRow).values(next_attempt_at=None))


def test_add_gives_increasing_sequences_and_keeps_the_raw_body(outbox: Outbox) -> None:
    raw = '{"note": "Ångström"}'.encode()
    first = outbox.add(announcement(1), raw)
    second = outbox.add(announcement(2), b"{}")
    assert first.is_new and second.is_new
    assert first.sequence is not None and second.sequence is not None
    assert second.sequence > first.sequence
    stored = outbox.get("evt-1")
    assert stored is not None and stored.raw_body == raw and stored.status == PENDING
    assert stored.event == announcement(1).model_copy(update={"timestamp": stored.event.timestamp})


def test_repeated_event_id_is_a_duplicate_with_its_body_and_a_conflict_without(
    outbox: Outbox,
) -> None:
    first = outbox.add(announcement(1), b'{"a": 1, "b": [2]}')
    same_document = outbox.add(announcement(1), b'{ "b": [2],\n "a": 1 }')
    other_document = outbox.add(announcement(1), b'{"a": 2, "b": [2]}')
    assert first.outcome == "accepted"
    assert (same_document.outcome, same_document.sequence) == ("duplicate", first.sequence)
    assert (other_document.outcome, other_document.sequence) == ("conflict", first.sequence)
    rows = outbox.list()
    assert len(rows) == 1 and rows[0].raw_body == b'{"a": 1, "b": [2]}'


def test_body_digest_ignores_key_order_and_whitespace_only() -> None:
    assert body_digest(b'{"a":1,"b":2}') == body_digest(b'{ "b": 2, "a": 1 }')
    assert body_digest(b'{"a":1}') != body_digest(b'{"a":1.5}')
    assert body_digest(b"not json") != body_digest(b"not json!")


def test_group_of_submissions_commits_in_one_transaction(outbox: Outbox) -> None:
    commits: list[int] = []
    sqlalchemy_event.listen(outbox.engine, "commit", lambda connection: commits.append(1))
    submissions = [Submission(announcement(n), b"{}") for n in (1, 2, 1, 3)]
    admissions = outbox.add_many(submissions)
    assert [a.outcome for a in admissions] == ["accepted", "accepted", "duplicate", "accepted"]
    assert admissions[2].sequence == admissions[0].sequence
    assert len(commits) == 1
    assert [row.event_id for row in outbox.pending()] == ["evt-1", "evt-2", "evt-3"]


def test_pending_backlog_is_bounded(outbox: Outbox) -> None:
    admissions = outbox.add_many(
        [Submission(announcement(n), b"{}") for n in (1, 2, 3)], max_pending=2
    )
    assert [a.outcome for a in admissions] == ["accepted", "accepted", "full"]
    assert outbox.add(announcement(1), b"{}", max_pending=2).outcome == "duplicate"
    skipped = outbox.add(announcement(4), b"{}", status=SKIPPED, max_pending=2)
    assert skipped.outcome == "accepted"  # not waiting for Prefect: not counted
    outbox.mark_emitted([admissions[0].sequence or 0])
    assert outbox.add(announcement(3), b"{}", max_pending=2).outcome == "accepted"


def test_the_backlog_bound_admits_up_to_the_limit_across_emitted_gaps(outbox: Outbox) -> None:
    """Pending events are bounded by sequences without counting them; the bound must
    never refuse what the limit allows nor admit past it."""
    first = outbox.add_many([Submission(announcement(n), b"{}") for n in (1, 2, 3, 4)])
    outbox.mark_emitted([first[0].sequence or 0, first[2].sequence or 0])  # 2 still pending
    admissions = outbox.add_many(
        [Submission(announcement(n), b"{}") for n in (5, 6, 7)], max_pending=4
    )
    assert [a.outcome for a in admissions] == ["accepted", "accepted", "full"]
    outbox.mark_emitted([a.sequence or 0 for a in (*first, *admissions[:2])])
    many = outbox.add_many(
        [Submission(announcement(n), b"{}") for n in range(10, 20)], max_pending=10
    )
    assert [a.outcome for a in many] == ["accepted"] * 10
    assert outbox.add(announcement(20), b"{}", max_pending=10).outcome == "full"


def test_concurrent_deliveries_of_one_event_store_one_row(sqlite_outbox: Outbox) -> None:
    results: list[tuple[int | None, bool]] = []
    barrier = threading.Barrier(6)

    def deliver() -> None:
        barrier.wait()
        admission = sqlite_outbox.add(announcement(7), b"{}")
        results.append((admission.sequence, admission.is_new))

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
    ids=["busy", "server-down", "credentials", "wrong-url"],
)
def test_prefect_that_cannot_take_events_keeps_them_pending_without_burning_attempts(
    sqlite_outbox: Outbox, answer: int, error: str
) -> None:
    fill(sqlite_outbox, 3)
    posts: list[list[str]] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/health":  # a 500 with a sick /health: Prefect is down
            return httpx.Response(answer)
        posts.append(emitted_ids(request))
        return httpx.Response(answer, text="database is locked")

    assert drain(sqlite_outbox, prefect, batch_size=2, max_attempts=1) is False
    assert posts == [["evt-1", "evt-2"]]  # stopped at once: a global backoff follows
    rows = sqlite_outbox.list()
    assert [r.status for r in rows] == [PENDING] * 3
    assert [r.attempts for r in rows] == [0, 0, 0]  # Prefect's fault, not the events'
    assert error in (rows[0].last_error or "")


def test_unreachable_prefect_keeps_events_pending(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 1)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert drain(sqlite_outbox, down, max_attempts=1) is False
    (row,) = sqlite_outbox.pending()
    assert "unreachable" in (row.last_error or "") and row.attempts == 0


def test_refused_event_is_failed_and_the_others_go_on_in_order(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 3)
    accepted: list[str] = []

    def refuse_second(request: httpx.Request) -> httpx.Response:
        ids = emitted_ids(request)
        if "evt-2" in ids:
            return httpx.Response(422, json={"detail": "bad event"})
        accepted.extend(ids)
        return httpx.Response(204)

    assert drain(sqlite_outbox, refuse_second, max_attempts=1) is True
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


def test_drainer_gives_way_to_a_busy_door_for_at_most_the_deferral(
    sqlite_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst: batches wait for the door, up to DOOR_DEFER_S; a door busy for longer is a
    flood, which the drainer no longer waits for; a quiet door's backlog goes at once."""
    monkeypatch.setattr("prefect_beamline.gateway.emitter.DOOR_DEFER_S", 0.3)
    sent_at: list[float] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return httpx.Response(204)

    busy = [True]

    async def go() -> float:
        emitter = PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(prefect))
        async with emitter:
            drainer = Drainer(sqlite_outbox, emitter, batch_size=1)
            drainer.door_busy = lambda: busy[0]
            fill(sqlite_outbox, 3)
            started = time.monotonic()
            await drainer.drain_once()
            busy[0] = False
            await asyncio.sleep(0.3)  # quiet for longer than DOOR_QUIET_S: the spell ends
            for number in (4, 5, 6):
                sqlite_outbox.add(announcement(number), b"{}")
            await drainer.drain_once()
            return started

    started = asyncio.run(go())
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert len(sent_at) == 6 and sqlite_outbox.counts()[PENDING] == 0
    assert sent_at[0] - started >= 0.3 * 0.95  # the burst went first
    assert max(gaps[:2]) < 0.2  # busy for longer than the deferral: full pace
    assert max(gaps[3:]) < 0.2 and sent_at[3] - sent_at[2] < 0.6  # quiet: no waiting


def test_the_door_is_busy_while_a_burst_waits_for_its_commit(
    sqlite_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the drainer gives way to: 16 or more announcements waiting for a commit."""
    writer = GroupCommitWriter(sqlite_outbox)
    release = threading.Event()
    commit = writer._commit
    monkeypatch.setattr(writer, "_commit", lambda group: release.wait(5) and commit(group))

    async def go() -> tuple[bool, bool, bool]:
        few = [
            asyncio.create_task(writer.submit(Submission(announcement(n), b"{}")))
            for n in range(1, 4)
        ]
        await asyncio.sleep(0.05)
        with_few = writer.busy()
        many = [
            asyncio.create_task(writer.submit(Submission(announcement(n), b"{}")))
            for n in range(4, 4 + BUSY_WAITING)
        ]
        await asyncio.sleep(0.05)
        with_many = writer.busy()
        release.set()
        await asyncio.gather(*few, *many)
        after = writer.busy()
        await writer.stop()
        return with_few, with_many, after

    assert asyncio.run(go()) == (False, True, False)
    assert sqlite_outbox.counts()[PENDING] == 3 + BUSY_WAITING


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


@pytest.mark.parametrize("yields", range(6))
def test_drainer_stops_when_cancelled_just_as_it_is_woken(
    sqlite_outbox: Outbox, yields: int
) -> None:
    """CI hung 600 s in a gateway's shutdown: the last 202 woke the drainer and the
    lifespan cancelled it in the same moment; Python 3.11's `asyncio.wait_for` returns the
    result of an awaitable that finished as the cancellation came, so the cancellation was
    lost and the drainer idled on forever."""

    async def go() -> bool:
        emitter = PrefectEmitter(
            "http://prefect/api", transport=httpx.MockTransport(lambda _: httpx.Response(204))
        )
        drainer = Drainer(sqlite_outbox, emitter, idle_poll_s=60.0)
        task = asyncio.create_task(drainer.run())
        await asyncio.sleep(0.1)  # idle, waiting to be woken
        drainer.wake()
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        return bool(done)

    assert asyncio.run(go())


def accept_all(accepted: list[str]) -> Handler:
    def prefect(request: httpx.Request) -> httpx.Response:
        accepted.extend(emitted_ids(request))
        return httpx.Response(204)

    return prefect


def test_unemittable_event_is_retried_then_dead_lettered_while_later_events_flow(
    outbox: Outbox,
) -> None:
    fill(outbox, 3)
    make_unreadable(outbox, "evt-1")
    accepted: list[str] = []

    assert drain(outbox, accept_all(accepted), max_attempts=3) is True
    assert accepted == ["evt-2", "evt-3"]  # past the poison event at once
    poison = outbox.get("evt-1")
    assert poison is not None and (poison.status, poison.attempts) == (PENDING, 1)
    assert "could not build the Prefect event" in (poison.last_error or "")
    assert poison.next_attempt_at is not None and poison.next_attempt_at > datetime.now(UTC)

    assert drain(outbox, accept_all(accepted), max_attempts=3) is True
    assert outbox.get("evt-1").attempts == 1  # type: ignore[union-attr]  # waits its backoff
    for attempt in (2, 3):
        come_due(outbox)
        outbox.add(announcement(10 + attempt), b"{}")
        drain(outbox, accept_all(accepted), max_attempts=3)
    dead = outbox.get("evt-1")
    assert dead is not None and (dead.status, dead.attempts) == (FAILED, 3)
    assert (dead.last_error or "").startswith("attempt 3 of 3:")
    assert accepted == ["evt-2", "evt-3", "evt-12", "evt-13"]


def make_unreadable(outbox: Outbox, event_id: str) -> None:
    """Overwrite a stored event with a document no CollectionEvent validates."""
    with outbox.engine.begin() as connection:
        connection.execute(
            update(OutboxRow).where(OutboxRow.event_id == event_id).values(event={"kind": "?"})
        )


def test_event_that_cannot_be_serialised_is_dead_lettered(sqlite_outbox: Outbox) -> None:
    sqlite_outbox.add(announcement(1, data_files=[POISON_PATH]), b"{}")
    sqlite_outbox.add(announcement(2), b"{}")
    accepted: list[str] = []
    assert drain(sqlite_outbox, accept_all(accepted), max_attempts=1) is True
    assert accepted == ["evt-2"]
    dead = sqlite_outbox.get("evt-1")
    assert dead is not None and dead.status == FAILED
    assert "UnicodeEncodeError" in (dead.last_error or "")
    assert sqlite_outbox.list(FAILED)[0].as_dict()["event_id"] == "evt-1"  # still listable


def test_a_collection_keeps_its_order_behind_a_failing_event_others_pass(
    outbox: Outbox,
) -> None:
    outbox.add(announcement(1, collection_id=7, kind="started"), b"{}")
    outbox.add(announcement(2, collection_id=8), b"{}")
    outbox.add(announcement(3, collection_id=7, kind="finished"), b"{}")
    outbox.add(announcement(4, collection_id=9), b"{}")
    accepted: list[str] = []
    refuse = {"evt-1"}

    def prefect(request: httpx.Request) -> httpx.Response:
        ids = emitted_ids(request)
        if refuse & set(ids):
            return httpx.Response(422, json={"detail": "refused"})
        accepted.extend(ids)
        return httpx.Response(204)

    drain(outbox, prefect)
    assert accepted == ["evt-2", "evt-4"]  # evt-3 waits behind evt-1 (same collection)
    drain(outbox, prefect)
    assert accepted == ["evt-2", "evt-4"]  # evt-1 is backing off: evt-3 still waits
    refuse.clear()
    come_due(outbox)
    drain(outbox, prefect)
    assert accepted == ["evt-2", "evt-4", "evt-1", "evt-3"]


def test_one_event_that_makes_prefect_fail_is_isolated_from_its_batch(
    sqlite_outbox: Outbox,
) -> None:
    fill(sqlite_outbox, 8)
    posts: list[list[str]] = []

    def prefect(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/health":
            return httpx.Response(200)
        ids = emitted_ids(request)
        posts.append(ids)
        return httpx.Response(500 if "evt-6" in ids else 204)

    assert drain(sqlite_outbox, prefect, batch_size=8) is True
    statuses = {row.event_id: (row.status, row.attempts) for row in sqlite_outbox.list()}
    assert statuses.pop("evt-6") == (PENDING, 1)
    assert set(statuses.values()) == {(EMITTED, 0)}
    emitted = [i for ids in posts if "evt-6" not in ids for i in ids]
    assert emitted == ["evt-1", "evt-2", "evt-3", "evt-4", "evt-5", "evt-7", "evt-8"]
    assert len(posts) <= 2 * 3 + 1  # halving, not one request per event


def test_drainer_keeps_going_while_a_poison_event_backs_off(sqlite_outbox: Outbox) -> None:
    """Reported: one accepted event stopped all processing. Here the drainer runs as in
    the gateway, with a poison event first; new events must still reach Prefect."""
    sqlite_outbox.add(announcement(1, data_files=[POISON_PATH]), b"{}")
    accepted: list[str] = []

    async def go() -> None:
        transport = httpx.MockTransport(accept_all(accepted))
        emitter = PrefectEmitter("http://prefect/api", transport=transport)
        drainer = Drainer(
            sqlite_outbox,
            emitter,
            backoff=Backoff(start_s=0.05, max_s=0.1),
            event_backoff=Backoff(start_s=0.05, max_s=0.1),
            max_attempts=3,
        )
        task = asyncio.create_task(drainer.run())
        for number in range(2, 6):
            sqlite_outbox.add(announcement(number), b"{}")
            drainer.wake()
            await asyncio.sleep(0.05)
        started = time.monotonic()
        while sqlite_outbox.counts()[PENDING] and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(go())
    assert accepted == ["evt-2", "evt-3", "evt-4", "evt-5"]
    assert sqlite_outbox.counts()[FAILED] == 1


def test_requeue_and_discard_act_on_dead_letters(outbox: Outbox) -> None:
    fill(outbox, 4)
    rows = outbox.pending()
    for row in rows[:3]:
        outbox.record_failure([row.sequence], "refused", give_up=True)
    assert outbox.discard(["evt-4"]) == 0  # pending, not a dead letter: kept
    assert outbox.discard(["evt-1"]) == 1
    assert outbox.requeue(["evt-2"]) == 1
    requeued = outbox.get("evt-2")
    assert requeued is not None and (requeued.status, requeued.attempts) == (PENDING, 0)
    assert outbox.discard() == 1  # every remaining dead letter: evt-3
    assert [row.event_id for row in outbox.list()] == ["evt-2", "evt-4"]


def test_listing_pages_and_says_when_more_exist(outbox: Outbox) -> None:
    fill(outbox, 5)
    first = outbox.page(limit=2)
    assert [r.event_id for r in first.rows] == ["evt-1", "evt-2"] and first.more
    second = outbox.page(limit=2, after=first.next_after or 0)
    assert [r.event_id for r in second.rows] == ["evt-3", "evt-4"] and second.more
    last = outbox.page(limit=2, after=second.next_after or 0)
    assert [r.event_id for r in last.rows] == ["evt-5"]
    assert not last.more and last.next_after is None


def test_prune_deletes_old_emitted_and_skipped_events_only(outbox: Outbox) -> None:
    fill(outbox, 4)
    one, two, three, _ = outbox.pending()
    outbox.mark_emitted([one.sequence, two.sequence])
    outbox.record_failure([three.sequence], "refused", give_up=True)
    outbox.add(announcement(5), b"{}", status=SKIPPED)
    outbox.add(announcement(6), b"{}", bluesky_start={"uid": "evt-6"})
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert outbox.prune(datetime.now(UTC) - timedelta(hours=1)) == 0  # nothing old yet
    assert outbox.prune(later) == 3
    assert [r.status for r in outbox.list()] == [FAILED, PENDING, PENDING]
    assert outbox.bluesky_start("evt-6") is None


def test_old_outbox_table_gets_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    box = Outbox(url)
    with box.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_gateway_outbox_status_collection")
        for column in ("collection_id", "body_hash", "next_attempt_at"):
            connection.exec_driver_sql(f"ALTER TABLE gateway_outbox DROP COLUMN {column}")
    box.close()
    upgraded = Outbox(url)
    assert upgraded.add(announcement(1), b"{}").is_new
    assert [r.collection_id for r in upgraded.due(10)] == [1]
    upgraded.close()


def test_running_drainer_prunes_what_is_past_retention(sqlite_outbox: Outbox) -> None:
    fill(sqlite_outbox, 3)
    sqlite_outbox.add(announcement(4), b"{}", status=SKIPPED)

    async def go() -> None:
        transport = httpx.MockTransport(accept_all([]))
        emitter = PrefectEmitter("http://prefect/api", transport=transport)
        drainer = Drainer(
            sqlite_outbox, emitter, retention=timedelta(seconds=0.2), prune_every_s=0.05
        )
        task = asyncio.create_task(drainer.run())
        started = time.monotonic()
        while sqlite_outbox.list() and time.monotonic() - started < 5:
            drainer.wake()
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(go())
    assert sqlite_outbox.list() == []  # emitted and skipped rows, raw bodies with them
