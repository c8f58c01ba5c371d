"""The gateway's durable outbox: every accepted announcement, in arrival order.

An event is committed here before the DAQ gets its 202, and stays `pending` until
Prefect has taken it. `failed` events (refused by Prefect) can be requeued, like
Zocalo's dead-letter-queue tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from prefect_beamline.events import CollectionEvent

PENDING, EMITTED, FAILED, SKIPPED = "pending", "emitted", "failed", "skipped"


class _Base(DeclarativeBase):
    pass


class OutboxEvent(_Base):
    __tablename__ = "outbox_event"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(DateTime)
    event: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    raw_body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    emitted_at: Mapped[datetime | None] = mapped_column(DateTime)


class BlueskyRunStart(_Base):
    """Start documents, so a later stop document (which names only its start) maps."""

    __tablename__ = "bluesky_run_start"

    uid: Mapped[str] = mapped_column(String(200), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


@dataclass(frozen=True)
class StoredEvent:
    """One outbox row as the drainer and the CLI see it."""

    sequence: int
    event_id: str
    source: str
    status: str
    attempts: int
    last_error: str | None
    event: CollectionEvent | None
    received_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "event_id": self.event_id,
            "source": self.source,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "received_at": self.received_at.isoformat(),
            "event": self.event.model_dump(mode="json") if self.event else None,
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Outbox:
    """SQL outbox (SQLite WAL by default; any SQLAlchemy database)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite"):
            self.engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(self.engine, "connect")
            def _pragmas(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def add(
        self,
        collection: CollectionEvent | None,
        raw_body: bytes,
        *,
        event_id: str,
        source: str,
        status: str = PENDING,
        note: str | None = None,
    ) -> tuple[int, bool]:
        """Store an accepted announcement; (sequence, False) if its id is already stored."""
        row = OutboxEvent(
            event_id=event_id,
            source=source,
            received_at=_now(),
            event=collection.model_dump(mode="json") if collection else None,
            raw_body=raw_body.decode("utf-8", errors="replace"),
            status=status,
            attempts=0,
            last_error=note,
        )
        try:
            with self._sessions() as session, session.begin():
                session.add(row)
                session.flush()
                return row.sequence, True
        except IntegrityError:
            with self._sessions() as session:
                existing = session.scalar(select(OutboxEvent.sequence).filter_by(event_id=event_id))
            if existing is None:
                raise
            return int(existing), False

    def pending(self, limit: int = 100) -> list[StoredEvent]:
        """Pending events, oldest first: the order they must reach Prefect in."""
        return self.list(PENDING, limit)

    def list(self, status: str | None = None, limit: int = 1000) -> list[StoredEvent]:
        query = select(OutboxEvent).order_by(OutboxEvent.sequence).limit(limit)
        if status:
            query = query.filter_by(status=status)
        with self._sessions() as session:
            return [_stored(row) for row in session.scalars(query)]

    def count(self, status: str) -> int:
        with self._sessions() as session:
            return int(
                session.scalar(select(func.count()).where(OutboxEvent.status == status)) or 0
            )

    def mark_emitted(self, sequence: int) -> None:
        self._update(sequence, status=EMITTED, emitted_at=_now(), last_error=None)

    def record_failure(self, sequence: int, error: str, *, give_up: bool) -> None:
        """Count a failed attempt; `give_up` moves the event to `failed` (not retried)."""
        with self._sessions() as session, session.begin():
            row = session.get_one(OutboxEvent, sequence)
            row.attempts += 1
            row.last_error = error[:2000]
            if give_up:
                row.status = FAILED

    def requeue(self, event_ids: list[str] | None = None) -> int:
        """Put failed events (or the named ones) back to pending; returns how many."""
        statement = update(OutboxEvent).values(status=PENDING, last_error=None)
        if event_ids:
            statement = statement.where(OutboxEvent.event_id.in_(event_ids))
        else:
            statement = statement.where(OutboxEvent.status == FAILED)
        statement = statement.where(OutboxEvent.event.is_not(None))
        with self._sessions() as session, session.begin():
            return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]

    def _update(self, sequence: int, **values: Any) -> None:
        with self._sessions() as session, session.begin():
            session.execute(update(OutboxEvent).filter_by(sequence=sequence).values(**values))

    def remember_run_start(self, uid: str, document: dict[str, Any]) -> None:
        with self._sessions() as session, session.begin():
            if session.get(BlueskyRunStart, uid) is None:
                session.add(BlueskyRunStart(uid=uid, document=document))

    def run_start(self, uid: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(BlueskyRunStart, uid)
            return dict(row.document) if row else None


def _stored(row: OutboxEvent) -> StoredEvent:
    return StoredEvent(
        sequence=row.sequence,
        event_id=row.event_id,
        source=row.source,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        event=CollectionEvent.model_validate(row.event) if row.event else None,
        received_at=row.received_at,
    )


def dumps(payload: Any) -> str:
    return json.dumps(payload, default=str)
