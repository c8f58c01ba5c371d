"""`python -m prefect_beamline.prefect_server`: `prefect server start` for the embedded
stack, with SQLite write transactions that wait for the lock instead of failing.

Prefect's server begins its SQLite transactions DEFERRED: they read, then take the write
lock at their first write. When another connection has committed in between (the event
persister, the task-run recorder, a flow run's state or logs), SQLite refuses that upgrade
at once ("database is locked", without waiting for the busy timeout); the API answers 503
and Prefect's client retries after 2 s, then 4 s. That was the embedded stack's latency
tail: 1 webhook in 5 took ~2 s more from automation to created flow run, or from pending
to running (docs/benchmarks.md). Beginning every transaction IMMEDIATE takes the write
lock up front, so concurrent writers queue for milliseconds on SQLite's busy timeout
instead. A server on PostgreSQL is not affected by any of this.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from prefect.server.database import configurations
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction


@asynccontextmanager
async def _begin_immediate(
    self: configurations.AioSqliteConfiguration,
    session: AsyncSession,
    with_for_update: bool = False,
) -> AsyncGenerator[AsyncSessionTransaction, None]:
    token = configurations.SQLITE_BEGIN_MODE.set("IMMEDIATE")
    try:
        async with session.begin() as transaction:
            yield transaction
    finally:
        configurations.SQLITE_BEGIN_MODE.reset(token)


def use_immediate_sqlite_transactions() -> None:
    """Make this process's Prefect server begin every SQLite transaction IMMEDIATE."""
    configurations.AioSqliteConfiguration.begin_transaction = _begin_immediate  # type: ignore[method-assign]


def main() -> None:
    """`prefect server start` with this process's arguments, in this process."""
    from prefect.cli import app

    use_immediate_sqlite_transactions()
    sys.argv = ["prefect", "server", "start", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
