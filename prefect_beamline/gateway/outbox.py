"""The gateway's durable outbox: every accepted announcement, in arrival order.

An event is committed here before the DAQ gets its 202 and stays `pending` until Prefect
has taken it. `failed` events (refused by Prefect) and `skipped` ones (Bluesky runs that
did not complete) are kept for inspection and can be requeued, like Zocalo's
dead-letter-queue tools. Bluesky start documents live here too, written in the same
transaction as their event, so a later stop document can be mapped.

Order: `sequence` is the autoincrement primary key. Of two events, the one whose 202 was
sent before the other was posted has the lower sequence, and pending events are emitted by
ascending sequence. Writes start with an INSERT or UPDATE, never a read, so SQLite's
busy timeout serializes concurrent writers instead of failing them.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from prefect_beamline.events import CollectionEvent
from prefect_beamline.lims.engine import WRITE_OPTION, display_url, engine_for, forget_engine

OutboxStatus = Literal["pending", "emitted", "failed", "skipped"]
PENDING, EMITTED, FAILED, SKIPPED = "pending", "emitted", "failed", "skipped"
STATUSES: tuple[str, ...] = get_args(OutboxStatus)
MAX_ERROR_CHARS = 2000

# MariaDB's BLOB holds 64 KiB; request bodies may be larger.
_RawBody = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class _Base(DeclarativeBase):
    pass


class OutboxRow(_Base):
    """One accepted announcement."""

    __tablename__ = "gateway_outbox"
    __table_args__ = (
        Index("ix_gateway_outbox_status_sequence", "status", "sequence"),
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


class BlueskyStartRow(_Base):
    """A Bluesky start document, so its stop document (which names only the uid) maps."""

    __tablename__ = "gateway_bluesky_start"

    uid: Mapped[str] = mapped_column(String(200), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime)


@dataclass(frozen=True)
class StoredEvent:
    """One outbox row as the drainer, the HTTP API and the CLI see it."""

    sequence: int
    event_id: str
    source: str
    status: str
    attempts: int
    last_error: str | None
    note: str | None
    received_at: datetime
    emitted_at: datetime | None
    event: CollectionEvent
    raw_body: bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times in UTC ISO 8601, the raw body as text."""
        return {
            "sequence": self.sequence,
            "event_id": self.event_id,
            "prefect_event_id": str(self.event.prefect_event_id),
            "source": self.source,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "note": self.note,
            "received_at": self.received_at.isoformat(),
            "emitted_at": self.emitted_at.isoformat() if self.emitted_at else None,
            "event": self.event.model_dump(mode="json"),
            "raw_body": self.raw_body.decode("utf-8", errors="replace"),
        }


def _now() -> datetime:
    """Naive UTC: what every database's DateTime column stores the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown outbox status {status!r}; expected one of {', '.join(STATUSES)}")


class Outbox:
    """SQL outbox: SQLite (WAL, busy timeout) by default; PostgreSQL or MariaDB by URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = engine_for(url)
        _Base.metadata.create_all(self.engine)

    def __repr__(self) -> str:
        return f"Outbox({display_url(self.url)!r})"

    def close(self) -> None:
        forget_engine(self.url, self.engine)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction (on SQLite `BEGIN IMMEDIATE`: no lock upgrade mid-way)."""
        with self.engine.connect() as connection:
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
    ) -> tuple[int, bool]:
        """Commit an accepted announcement: (sequence, True), or (sequence, False) when an
        event with its id is already stored (nothing is written then).

        `bluesky_start`, the start document the event came from, is stored in the same
        transaction under the event id (the run uid).
        """
        check_status(status)
        now = _now()
        try:
            with self._writing() as connection:
                inserted = connection.execute(
                    insert(OutboxRow).values(
                        event_id=collection.event_id,
                        source=collection.source,
                        received_at=now,
                        event=collection.model_dump(mode="json"),
                        raw_body=raw_body,
                        status=status,
                        attempts=0,
                        note=note,
                    )
                )
                key = inserted.inserted_primary_key
                if key is None:
                    raise RuntimeError(f"{self!r}: the database returned no sequence number")
                sequence = int(key[0])
                if bluesky_start is not None:
                    connection.execute(
                        insert(BlueskyStartRow).values(
                            uid=collection.event_id, document=bluesky_start, received_at=now
                        )
                    )
        except IntegrityError:
            # Same event id stored already, perhaps by a concurrent request just now.
            existing = self.get(collection.event_id)
            if existing is None:
                raise
            return existing.sequence, False
        return sequence, True

    def get(self, event_id: str) -> StoredEvent | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(OutboxRow).filter_by(event_id=event_id)).first()
        return _stored(row) if row is not None else None

    def pending(self, limit: int = 100) -> builtins.list[StoredEvent]:
        """Pending events, oldest first: the order they must reach Prefect in."""
        return self.list(PENDING, limit)

    def list(self, status: str | None = None, limit: int = 1000) -> builtins.list[StoredEvent]:
        """Stored events (of one status, if given) by ascending sequence."""
        check_status(status)
        query = select(OutboxRow).order_by(OutboxRow.sequence).limit(limit)
        if status is not None:
            query = query.filter_by(status=status)
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def counts(self) -> dict[str, int]:
        """Number of events per status (every status present, zeros included)."""
        query = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
        with self.engine.connect() as connection:
            found = {status: int(n) for status, n in connection.execute(query)}
        return {status: found.get(status, 0) for status in STATUSES}

    def mark_emitted(self, sequences: Sequence[int]) -> None:
        """Prefect took these events."""
        self._update(sequences, status=EMITTED, emitted_at=_now(), last_error=None)

    def record_failure(self, sequences: Sequence[int], error: str, *, give_up: bool) -> None:
        """Count a failed attempt; `give_up` moves the events to `failed` (not retried)."""
        values: dict[str, Any] = {
            "attempts": OutboxRow.attempts + 1,
            "last_error": error[:MAX_ERROR_CHARS],
        }
        if give_up:
            values["status"] = FAILED
        self._update(sequences, **values)

    def requeue(self, event_ids: Sequence[str] | None = None) -> int:
        """Make events pending again: the named ones (any status), else every failed one.

        Returns how many. A requeued event keeps its sequence, so it goes out before newer
        ones. Prefect drops an id it saw recently, so re-emitting an `emitted` event within
        its dedupe window does nothing.
        """
        statement = update(OutboxRow).values(status=PENDING, last_error=None, emitted_at=None)
        if event_ids:
            statement = statement.where(OutboxRow.event_id.in_(builtins.list(event_ids)))
        else:
            statement = statement.where(OutboxRow.status == FAILED)
        with self._writing() as connection:
            return int(connection.execute(statement).rowcount)

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


def _stored(row: Any) -> StoredEvent:
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
        event=CollectionEvent.model_validate(row.event),
        raw_body=bytes(row.raw_body),
    )
