"""Transactions and the helpers every LIMS write and read uses, core or technique.

Every write is safe to repeat: a retried Prefect task calls it again with the same
arguments and finds its rows already there. Concurrent writers (task threads, several
flow-run processes, several hosts) are serialised where it matters by locking the
parent row first (`SELECT ... FOR UPDATE` of the DataCollection, ProcessingJob or
AutoProcProgram written under; on SQLite every write transaction is `BEGIN
IMMEDIATE`), then reading and writing. Lock waits, deadlocks, "database is locked"
and unique-key races rerun the whole call briefly (`retrying`).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.dml import Insert

from prefect_beamline.lims.engine import WRITE_OPTION
from prefect_beamline.lims.schema import AutoProcProgram, Base, ProcessingJob

log = logging.getLogger(__name__)

ATTEMPTS = 6
FIRST_BACKOFF_S = 0.05
BULK_ROWS = 1000
# PostgreSQL SQLSTATEs and MySQL/MariaDB error numbers worth retrying: serialization
# failure, deadlock, lock not available, unique violation (a racing insert won).
_TRANSIENT_PG_CODES = frozenset({"40001", "40P01", "55P03", "23505"})
_TRANSIENT_MYSQL_ERRORS = frozenset({1205, 1213, 1062})
_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "unique constraint")

P = ParamSpec("P")
R = TypeVar("R")
Row = TypeVar("Row", bound=Base)


def backoff_s(attempt: int) -> float:
    """Jittered exponential pause before retry number `attempt` (1-based)."""
    return FIRST_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)


def retrying(method: Callable[P, R]) -> Callable[P, R]:
    """Rerun the whole call (its transaction rolled back) on transient database errors."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 1
        while True:
            try:
                return method(*args, **kwargs)
            except DBAPIError as error:
                if attempt >= ATTEMPTS or not is_transient(error):
                    raise
                delay = backoff_s(attempt)
                log.debug(
                    "%s: transient database error (attempt %d), retrying in %.2f s: %s",
                    method.__name__,
                    attempt,
                    delay,
                    error.orig,
                )
                time.sleep(delay)
                attempt += 1

    return wrapper


def is_transient(error: DBAPIError) -> bool:
    """A lock wait, deadlock, lost unique-key race or dropped connection."""
    if error.connection_invalidated:
        return True
    orig = error.orig
    if getattr(orig, "pgcode", None) in _TRANSIENT_PG_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL_ERRORS:
        return True
    message = str(orig).lower()
    return any(text in message for text in _TRANSIENT_MESSAGES)


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Session]:
    """One short transaction; committed when the block ends, rolled back on error."""
    with engine.connect() as connection:
        if write:
            connection.execution_options(**{WRITE_OPTION: True})
        with Session(bind=connection, expire_on_commit=False) as session, session.begin():
            yield session


def lock_program(
    session: Session, program_id: int, data_collection_id: int | None = None
) -> AutoProcProgram:
    """Lock the program's row for this transaction, checking it belongs to the collection."""
    program = session.get(AutoProcProgram, program_id, with_for_update={"key_share": True})
    if program is None:
        raise ValueError(f"AutoProcProgram {program_id} does not exist; start_program first")
    if data_collection_id is not None and program.processingJobId is not None:
        owner = session.scalar(
            select(ProcessingJob.dataCollectionId).filter_by(
                processingJobId=program.processingJobId
            )
        )
        if owner is not None and owner != data_collection_id:
            raise ValueError(
                f"AutoProcProgram {program_id} processes dataCollectionId {owner}, "
                f"not {data_collection_id}"
            )
    return program


def first_row(session: Session, model: type[Row], keys: Mapping[str, Any]) -> Row | None:
    """The row of `model` whose columns hold `keys`, the first by primary key, or None."""
    primary_key = model.__mapper__.primary_key
    return session.scalar(select(model).filter_by(**keys).order_by(*primary_key).limit(1))


def first_or_add(session: Session, model: type[Row], keys: Mapping[str, Any], **new: Any) -> Row:
    """`first_row`, or a new row with `keys` and the `new` values, added to the session:
    the row an idempotent write creates once and updates when it is called again."""
    row = first_row(session, model, keys)
    if row is None:
        row = model(**keys, **new)
        session.add(row)
    return row


def program_result_row(
    session: Session, model: type[Row], program_id: int, data_collection_id: int
) -> Row:
    """The one row of `model` a program writes (a table unique on autoProcProgramId, with
    the dataCollectionId it processed), new the first time; the program is locked and
    checked to process that collection first."""
    lock_program(session, program_id, data_collection_id)
    keys = {"autoProcProgramId": program_id}
    return first_or_add(session, model, keys, dataCollectionId=data_collection_id)


def rows_by_key(
    session: Session,
    key: InstrumentedAttribute[Any],
    ids: Sequence[int],
    *columns: InstrumentedAttribute[Any],
    order_by: Sequence[InstrumentedAttribute[Any]],
) -> dict[int, list[tuple[Any, ...]]]:
    """The `columns` of every row whose `key` column is one of `ids`, grouped by key, in
    `order_by` order within each group: the children of many parents in one query."""
    grouped: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    if ids:
        query = select(key, *columns).where(key.in_(ids)).order_by(*order_by)
        for parent, *values in session.execute(query):
            grouped[parent].append(tuple(values))
    return grouped


def upsert(
    dialect: str, table: Table, conflict: tuple[str, ...], update: tuple[str, ...]
) -> Insert:
    """INSERT that updates the `update` columns where a row with the same `conflict`
    key exists."""
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update(
            {column: statement.inserted[column] for column in update}
        )
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        return insert.on_conflict_do_update(
            index_elements=list(conflict),
            set_={column: insert.excluded[column] for column in update},
        )
    raise NotImplementedError(
        f"the LIMS writer supports SQLite, PostgreSQL and MariaDB/MySQL, not {dialect!r}"
    )


def bulk_upsert(
    session: Session,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    conflict: tuple[str, ...],
) -> None:
    """Insert `rows` (dicts of column values) into `table`, updating those whose
    `conflict` key exists: one statement per thousand rows, on every dialect."""
    if not rows:
        return
    assert isinstance(table, Table)
    connection = session.connection()
    dialect = connection.dialect.name
    update = tuple(key for key in rows[0] if key not in conflict)
    statement = upsert(dialect, table, conflict, update)
    if dialect == "postgresql":
        # SQLAlchemy batches an upsert into multi-row VALUES only when it returns
        # something; without, psycopg2 would send the rows one by one.
        primary = next(iter(table.primary_key.columns))
        statement = statement.returning(primary)
    for start in range(0, len(rows), BULK_ROWS):
        connection.execute(statement, list(rows[start : start + BULK_ROWS])).close()


def check_length(value: str, limit: int, what: str) -> str:
    """`value` when it fits an ISPyB column; identities are checked, never clipped."""
    if len(value) > limit:
        raise ValueError(
            f"{what} is {len(value)} characters, ISPyB holds at most {limit}: {value[:80]!r}..."
        )
    return value


def clip(text: str, limit: int) -> str:
    """Free text cut to fit an ISPyB column."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def now() -> datetime:
    """The current time as ISPyB stores it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(moment: datetime) -> datetime:
    """ISPyB stores naive datetimes; ours are UTC."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
