"""One engine factory for every database this project writes: the LIMS and the outbox.

SQLite gets WAL (readers never block the writer), `synchronous=FULL` (a commit survives
power loss), a busy timeout and `BEGIN IMMEDIATE` for writes, so threads and processes
can share one file. Engines are shared per URL (one connection pool per process) and
a forked child never reuses its parent's pooled connections.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_S = 30
# Execution option a connection sets before a write transaction (see `_on_begin`).
WRITE_OPTION = "lims_write"

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """The process's engine for `url`, created on first use."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _make_engine(url)
        return engine


def forget_engine(url: str, engine: Engine) -> None:
    """Close the engine's pooled connections; the next `engine_for(url)` makes a new one."""
    with _ENGINES_LOCK:
        if _ENGINES.get(url) is engine:
            del _ENGINES[url]
    engine.dispose()


def display_url(url: str) -> str:
    """The URL with its password hidden, for reprs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def _after_fork_in_child() -> None:
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_recycle=3600)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if in_memory:
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, begin transactions (see `_on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write takes the database's write lock up front: two writers never both
        # read, then both insert, and never fail upgrading a read lock mid-transaction.
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
