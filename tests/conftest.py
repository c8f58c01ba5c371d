"""Shared fixtures: an empty LIMS database on SQLite and on every configured server.

PostgreSQL and MariaDB cases run when PREFECT_BEAMLINE_TEST_POSTGRES_URL /
PREFECT_BEAMLINE_TEST_MARIADB_URL name a server (CI sets both); each test gets its own
schema or database, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prefect_beamline.lims import Lims

SERVERS = {
    "postgresql": "PREFECT_BEAMLINE_TEST_POSTGRES_URL",
    "mariadb": "PREFECT_BEAMLINE_TEST_MARIADB_URL",
}


def _server_database(kind: str) -> Iterator[str]:
    variable = SERVERS[kind]
    base_url = os.environ.get(variable)
    if not base_url:
        pytest.skip(f"{variable} is not set: no {kind} server configured")
    name = f"lims_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    url = make_url(base_url)
    if kind == "postgresql":
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        test_url = url.update_query_dict({"options": f"-csearch_path={name}"})
        drop = f'DROP SCHEMA "{name}" CASCADE'
    else:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE `{name}`"))
        test_url = url.set(database=name)
        drop = f"DROP DATABASE `{name}`"
    try:
        yield test_url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(drop))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def lims_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lims.db'}"
        return
    yield from _server_database(request.param)


@pytest.fixture
def lims(lims_url: str) -> Iterator[Lims]:
    """A Lims with its schema created, on each kind of database."""
    client = Lims(lims_url)
    client.create_schema()
    yield client
    client.engine.dispose()
