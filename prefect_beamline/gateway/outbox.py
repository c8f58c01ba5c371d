"""The gateway's durable outbox: every accepted announcement, until Prefect has it.

An event is committed here before the DAQ gets its 202 and stays `pending` until Prefect
has taken it. An event that keeps failing (Prefect refuses it, or it cannot even be
built) is retried with its own backoff (`next_attempt_at`) and, after the configured
number of attempts, dead-lettered as `failed` with its reason: an operator inspects,
requeues or discards it (`prefect-beamline outbox`), like Zocalo's dead-letter-queue
tools. `skipped` events (Bluesky runs that did not complete) are kept for inspection.
Bluesky start documents live here too, written in the same transaction as their event,
so a later stop document can be mapped.

Order: `sequence` is the autoincrement primary key. Of two events, the one whose 202 was
sent before the other was posted has the lower sequence. Events of one data collection
reach Prefect in sequence order: a later one waits while an earlier one is pending
(`due`); events of other collections go past a failing one.

Writes: `add_many` commits many requests' events in one transaction (the gateway's
group commit, see `writer.py`); it starts with a read under SQLite's `BEGIN IMMEDIATE`
write lock, so concurrent writers are serialized, and a duplicate id found by a
concurrent writer on a server database retries one event at a time.

Replays: each row keeps a SHA-256 of its request body as canonical JSON (keys sorted, no
whitespace), so the same id with the same document is a duplicate and the same id with a
different document is a conflict. Emitted and skipped rows, raw body included, are
deleted after the retention period (`prune`); dead letters stay until discarded.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column

from prefect_beamline.events import CollectionEvent, prefect_event_id
from prefect_beamline.lims.engine import WRITE_OPTION, display_url, engine_for, forget_engine

OutboxStatus = Literal["pending", "emitted", "failed", "skipped"]
PENDING, EMITTED, FAILED, SKIPPED = "pending", "emitted", "failed", "skipped"
STATUSES: tuple[str, ...] = get_args(OutboxStatus)
MAX_ERROR_CHARS = 2000
PRUNE_CHUNK = 1000

# MariaDB's BLOB holds 64 KiB; request bodies may be larger.
_RawBody = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class _Base(DeclarativeBase):
    pass


class OutboxRow(_Base):
    """One accepted announcement."""

    __tablename__ = "gateway_outbox"
    __table_args__ = (
        Index("ix_gateway_outbox_status_sequence", "status", "sequence"),
        Index("ix_gateway_outbox_status_collection", "status", "collection_id", "sequence"),
        {"sqlite_autoincrement": True},  # never reuse a sequence number
    )

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(DateTime)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    raw_body: Mapped[bytes] = mapped_column(_RawBody)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    emitted_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Added by issue 10; `_upgrade` adds them to an outbox made before.
    collection_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


_ADDED_COLUMNS = ("collection_id", "body_hash", "next_attempt_at")


class BlueskyStartRow(_Base):
    """A Bluesky start document, so its stop document (which names only the uid) maps."""

    __tablename__ = "gateway_bluesky_start"

    uid: Mapped[str] = mapped_column(String(200), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime)


@dataclass(frozen=True)
class StoredEvent:
    """One outbox row as the drainer, the HTTP API and the CLI see it.

    `document` is the stored event as JSON; `event` validates it on first use, so one
    row that no longer validates fails only where it is used (the drainer dead-letters
    it), never a listing.
    """

    sequence: int
    event_id: str
    source: str
    status: str
    attempts: int
    last_error: str | None
    note: str | None
    received_at: datetime
    emitted_at: datetime | None
    document: dict[str, Any]
    raw_body: bytes
    collection_id: int | None = None
    next_attempt_at: datetime | None = None

    @cached_property
    def event(self) -> CollectionEvent:
        return CollectionEvent.model_validate(self.document)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times in UTC ISO 8601, the raw body as text."""
        return {
            "sequence": self.sequence,
            "event_id": self.event_id,
            "prefect_event_id": str(prefect_event_id(self.event_id)),
            "source": self.source,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": _iso(self.next_attempt_at),
            "note": self.note,
            "received_at": self.received_at.isoformat(),
            "emitted_at": _iso(self.emitted_at),
            "collection_id": self.collection_id,
            "event": self.document,
            "raw_body": self.raw_body.decode("utf-8", errors="replace"),
        }


@dataclass(frozen=True)
class Submission:
    """An announcement the gateway accepted at the door, to be committed."""

    event: CollectionEvent
    raw_body: bytes
    status: str = PENDING
    note: str | None = None
    bluesky_start: dict[str, Any] | None = None

    @cached_property
    def body_hash(self) -> str:
        return body_digest(self.raw_body)


Outcome = Literal["accepted", "duplicate", "conflict", "full"]


@dataclass(frozen=True)
class Admission:
    """What the outbox made of one submission.

    accepted: stored now; duplicate: this id with the same body was stored before;
    conflict: this id was stored before with a different body (nothing written);
    full: the pending backlog is at its bound (nothing written; retry later).
    """

    outcome: Outcome
    sequence: int | None

    @property
    def is_new(self) -> bool:
        return self.outcome == "accepted"


@dataclass(frozen=True)
class Page:
    """One page of a listing; `next_after` continues it when `more` is true."""

    rows: builtins.list[StoredEvent]
    more: bool

    @property
    def next_after(self) -> int | None:
        return self.rows[-1].sequence if self.more and self.rows else None


def body_digest(raw_body: bytes) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no whitespace); of the bytes
    themselves when they are not JSON. Two deliveries of one document agree."""
    try:
        canonical = json.dumps(
            json.loads(raw_body), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()
    except ValueError:
        canonical = raw_body
    return hashlib.sha256(canonical).hexdigest()


def _now() -> datetime:
    """Naive UTC: what every database's DateTime column stores the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown outbox status {status!r}; expected one of {', '.join(STATUSES)}")


class Outbox:
    """SQL outbox: SQLite (WAL, busy timeout) by default; PostgreSQL or MariaDB by URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = engine_for(url)
        self._write_lock = threading.Lock()
        _Base.metadata.create_all(self.engine)
        _upgrade(self.engine)

    def __repr__(self) -> str:
        return f"Outbox({display_url(self.url)!r})"

    def close(self) -> None:
        forget_engine(self.url, self.engine)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction (on SQLite `BEGIN IMMEDIATE`: no lock upgrade mid-way).

        Writers of this process (the gateway's group commit and its drainer) take turns
        on a lock first: one waiting here starts the moment the other commits, where
        SQLite's busy handler would poll with sleeps of up to 100 ms (tens of ms in the
        p99 of a 202). Other processes (the outbox CLI) still meet the busy timeout.
        """
        with self._write_lock, self.engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    def add(
        self,
        collection: CollectionEvent,
        raw_body: bytes,
        *,
        status: str = PENDING,
        note: str | None = None,
        bluesky_start: dict[str, Any] | None = None,
        max_pending: int | None = None,
    ) -> Admission:
        """Commit one accepted announcement (see `add_many`)."""
        submission = Submission(collection, raw_body, status, note, bluesky_start)
        return self.add_many([submission], max_pending=max_pending)[0]

    def add_many(
        self, submissions: Sequence[Submission], *, max_pending: int | None = None
    ) -> builtins.list[Admission]:
        """Commit the new ones of `submissions` in one transaction, in order.

        A known id is a duplicate (same body) or a conflict (different body); the second
        of two submissions with one id is judged against the first. Past `max_pending`
        pending events a new pending one is refused as `full`. A Bluesky start document
        is stored under its event's id in the same transaction.
        """
        for submission in submissions:
            check_status(submission.status)
        try:
            return self._add_many(submissions, max_pending)
        except IntegrityError:
            # A concurrent writer stored one of these ids just now (server databases).
            if len(submissions) > 1:
                return [self.add_many([one], max_pending=max_pending)[0] for one in submissions]
            return self._add_many(submissions, max_pending)

    def _add_many(
        self, submissions: Sequence[Submission], max_pending: int | None
    ) -> builtins.list[Admission]:
        now = _now()
        ids = {submission.event.event_id for submission in submissions}
        with self._writing() as connection:
            known: dict[str, tuple[int, str | None]] = {
                row.event_id: (row.sequence, row.body_hash)
                for row in connection.execute(
                    select(OutboxRow.event_id, OutboxRow.sequence, OutboxRow.body_hash).where(
                        OutboxRow.event_id.in_(ids)
                    )
                )
            }
            room = None
            if max_pending is not None:
                room = max_pending - _pending(connection, max_pending - len(submissions))
            judged: builtins.list[tuple[Outcome, str]] = []  # sequences looked up last
            new: builtins.list[Submission] = []
            for submission in submissions:
                event_id = submission.event.event_id
                if event_id in known:
                    stored_hash = known[event_id][1]
                    same = stored_hash is None or stored_hash == submission.body_hash
                    judged.append(("duplicate" if same else "conflict", event_id))
                elif submission.status == PENDING and room is not None and room <= 0:
                    judged.append(("full", event_id))
                else:
                    if submission.status == PENDING and room is not None:
                        room -= 1
                    known[event_id] = (0, submission.body_hash)
                    judged.append(("accepted", event_id))
                    new.append(submission)
            inserted = self._insert(connection, new, now)
            for submission, sequence in zip(new, inserted, strict=True):
                known[submission.event.event_id] = (sequence, submission.body_hash)
        return [
            Admission(outcome, None if outcome == "full" else known[event_id][0])
            for outcome, event_id in judged
        ]

    def _insert(
        self, connection: Connection, submissions: Sequence[Submission], now: datetime
    ) -> builtins.list[int]:
        """Insert the rows in one statement; their sequences, in order."""
        if not submissions:
            return []
        rows = [
            {
                "event_id": submission.event.event_id,
                "source": submission.event.source,
                "received_at": now,
                "event": submission.event.model_dump(mode="json"),
                "raw_body": submission.raw_body,
                "status": submission.status,
                "attempts": 0,
                "note": submission.note,
                "collection_id": submission.event.collection_id,
                "body_hash": submission.body_hash,
            }
            for submission in submissions
        ]
        if connection.dialect.insert_executemany_returning_sort_by_parameter_order:
            statement = insert(OutboxRow).returning(
                OutboxRow.sequence, sort_by_parameter_order=True
            )
            sequences = [
                int(sequence) for sequence in connection.execute(statement, rows).scalars()
            ]
        else:  # one INSERT per row; each returns its key
            sequences = []
            for row in rows:
                key = connection.execute(insert(OutboxRow).values(**row)).inserted_primary_key
                if key is None:
                    raise RuntimeError(f"{self!r}: the database returned no sequence number")
                sequences.append(int(key[0]))
        starts = [
            {"uid": s.event.event_id, "document": s.bluesky_start, "received_at": now}
            for s in submissions
            if s.bluesky_start is not None
        ]
        if starts:
            uids = [start["uid"] for start in starts]
            connection.execute(delete(BlueskyStartRow).where(BlueskyStartRow.uid.in_(uids)))
            connection.execute(insert(BlueskyStartRow), starts)
        return sequences

    def get(self, event_id: str) -> StoredEvent | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(OutboxRow).filter_by(event_id=event_id)).first()
        return _stored(row) if row is not None else None

    def pending(self, limit: int = 100) -> builtins.list[StoredEvent]:
        """Pending events, oldest first, whatever their next attempt time."""
        return self.list(PENDING, limit)

    def due(self, limit: int, now: datetime | None = None) -> builtins.list[StoredEvent]:
        """Pending events to send now, oldest first: those whose next attempt time has
        come and whose collection has no earlier pending event still waiting for its
        own next attempt. An earlier due event of the same collection comes first in
        the list, so one collection's events stay in order within a batch too."""
        moment = _naive(now) if now is not None else _now()
        earlier = aliased(OutboxRow)
        waiting_before = exists().where(
            earlier.status == PENDING,
            earlier.collection_id == OutboxRow.collection_id,
            earlier.sequence < OutboxRow.sequence,
            earlier.next_attempt_at > moment,
        )
        query = (
            select(OutboxRow)
            .where(
                OutboxRow.status == PENDING,
                or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= moment),
                ~waiting_before,
            )
            .order_by(OutboxRow.sequence)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def next_attempt_at(self) -> datetime | None:
        """When the earliest backed-off pending event is due (UTC), if any."""
        query = select(func.min(OutboxRow.next_attempt_at)).where(
            OutboxRow.status == PENDING, OutboxRow.next_attempt_at.is_not(None)
        )
        with self.engine.connect() as connection:
            return _utc(connection.execute(query).scalar_one_or_none())

    def list(
        self, status: str | None = None, limit: int = 1000, after: int = 0
    ) -> builtins.list[StoredEvent]:
        """Stored events (of one status, if given) by ascending sequence, after `after`."""
        return self.page(status, limit, after).rows

    def page(self, status: str | None = None, limit: int = 100, after: int = 0) -> Page:
        """Up to `limit` stored events with sequence > `after`; says whether more exist."""
        check_status(status)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = (
            select(OutboxRow)
            .where(OutboxRow.sequence > after)
            .order_by(OutboxRow.sequence)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.filter_by(status=status)
        with self.engine.connect() as connection:
            rows = [_stored(row) for row in connection.execute(query)]
        return Page(rows[:limit], more=len(rows) > limit)

    def counts(self) -> dict[str, int]:
        """Number of events per status (every status present, zeros included)."""
        query = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
        with self.engine.connect() as connection:
            found = {status: int(n) for status, n in connection.execute(query)}
        return {status: found.get(status, 0) for status in STATUSES}

    def mark_emitted(self, sequences: Sequence[int]) -> None:
        """Prefect took these events."""
        self._update(
            sequences, status=EMITTED, emitted_at=_now(), last_error=None, next_attempt_at=None
        )

    def note_unavailable(self, sequences: Sequence[int], error: str) -> None:
        """Prefect could not be reached for these events: say why, count no attempt."""
        self._update(sequences, last_error=error[:MAX_ERROR_CHARS])

    def record_failure(
        self,
        sequences: Sequence[int],
        error: str,
        *,
        give_up: bool,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Count a failed attempt of these events: retry at `next_attempt_at`, or, with
        `give_up`, dead-letter them (`failed`, not retried)."""
        values: dict[str, Any] = {
            "attempts": OutboxRow.attempts + 1,
            "last_error": error[:MAX_ERROR_CHARS],
            "next_attempt_at": _naive(next_attempt_at) if next_attempt_at else None,
        }
        if give_up:
            values["status"] = FAILED
            values["next_attempt_at"] = None
        self._update(sequences, **values)

    def requeue(self, event_ids: Sequence[str] | None = None) -> int:
        """Make events pending again, with fresh attempts: the named ones (any status),
        else every failed one. Returns how many.

        A requeued event keeps its sequence, so it goes out before newer ones. Prefect
        drops an id it saw recently, so re-emitting an `emitted` event within its dedupe
        window does nothing.
        """
        statement = update(OutboxRow).values(
            status=PENDING, last_error=None, emitted_at=None, attempts=0, next_attempt_at=None
        )
        return self._for_events(statement, event_ids)

    def discard(self, event_ids: Sequence[str] | None = None) -> int:
        """Delete dead letters: the named failed events, else every failed one. Events
        of another status are left alone. Returns how many."""
        return self._for_events(delete(OutboxRow), event_ids, only_failed=True)

    def _for_events(
        self, statement: Any, event_ids: Sequence[str] | None, *, only_failed: bool = False
    ) -> int:
        if event_ids:
            statement = statement.where(OutboxRow.event_id.in_(builtins.list(event_ids)))
        if only_failed or not event_ids:
            statement = statement.where(OutboxRow.status == FAILED)
        with self._writing() as connection:
            return int(connection.execute(statement).rowcount)

    def prune(self, before: datetime) -> int:
        """Delete emitted events taken before `before` and skipped ones received before
        it (raw bodies with them), and Bluesky start documents older than it, a chunk
        per transaction so the gateway's writes are never held up for long. Returns how
        many events were deleted."""
        cutoff = _naive(before)
        old = or_(
            (OutboxRow.status == EMITTED) & (OutboxRow.emitted_at < cutoff),
            (OutboxRow.status == SKIPPED) & (OutboxRow.received_at < cutoff),
        )
        deleted = 0
        while True:
            with self._writing() as connection:
                chunk = connection.execute(
                    select(OutboxRow.sequence).where(old).limit(PRUNE_CHUNK)
                ).scalars()
                sequences = builtins.list(chunk)
                if sequences:
                    connection.execute(delete(OutboxRow).where(OutboxRow.sequence.in_(sequences)))
            deleted += len(sequences)
            if len(sequences) < PRUNE_CHUNK:
                break
        with self._writing() as connection:
            connection.execute(delete(BlueskyStartRow).where(BlueskyStartRow.received_at < cutoff))
        return deleted

    def bluesky_start(self, uid: str) -> dict[str, Any] | None:
        """The stored start document with this uid."""
        with self.engine.connect() as connection:
            document = connection.execute(
                select(BlueskyStartRow.document).filter_by(uid=uid)
            ).scalar_one_or_none()
        return dict(document) if document is not None else None

    def _update(self, sequences: Sequence[int], **values: Any) -> None:
        if not sequences:
            return
        with self._writing() as connection:
            connection.execute(
                update(OutboxRow)
                .where(OutboxRow.sequence.in_(builtins.list(sequences)))
                .values(**values)
            )


def _pending(connection: Connection, room_below: int) -> int:
    """How many events are pending, or a bound above it when even the bound is at most
    `room_below`. No more can be pending than sequences from the oldest pending event to
    the newest row (two index lookups); a count walks every pending row, inside the
    door's commit (~1 ms per 10,000 pending, in a burst), so it runs only near the limit."""
    oldest, newest = connection.execute(
        select(
            select(func.min(OutboxRow.sequence))
            .where(OutboxRow.status == PENDING)
            .scalar_subquery(),
            select(func.max(OutboxRow.sequence)).scalar_subquery(),
        )
    ).one()
    if oldest is None:
        return 0
    bound = int(newest) - int(oldest) + 1
    return bound if bound <= room_below else _count(connection, PENDING)


def _count(connection: Connection, status: str) -> int:
    return int(
        connection.execute(select(func.count()).where(OutboxRow.status == status)).scalar_one()
    )


def _upgrade(engine: Engine) -> None:
    """Add the columns and index newer code uses to an outbox table made before them."""
    present = {column["name"] for column in inspect(engine).get_columns(OutboxRow.__tablename__)}
    missing = [name for name in _ADDED_COLUMNS if name not in present]
    if not missing:
        return
    table = OutboxRow.__table__
    with engine.begin() as connection:
        for name in missing:
            column_type = table.c[name].type.compile(dialect=engine.dialect)
            connection.execute(
                text(f"ALTER TABLE {OutboxRow.__tablename__} ADD COLUMN {name} {column_type}")
            )
    for index in table.indexes:  # type: ignore[attr-defined]
        index.create(engine, checkfirst=True)


def _stored(row: Any) -> StoredEvent:
    document = row.event if isinstance(row.event, dict) else {}
    return StoredEvent(
        sequence=row.sequence,
        event_id=row.event_id,
        source=row.source,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        note=row.note,
        received_at=_utc(row.received_at) or row.received_at,
        emitted_at=_utc(row.emitted_at),
        document=document,
        raw_body=bytes(row.raw_body),
        collection_id=row.collection_id,
        next_attempt_at=_utc(row.next_attempt_at),
    )
