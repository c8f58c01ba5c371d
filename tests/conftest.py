"""Shared fixtures: an empty LIMS database on SQLite and on every configured server.

`lims_url` runs a test once per database kind: "sqlite" (a file in tmp_path),
"postgresql" and "mariadb". The server cases run when PREFECT_BEAMLINE_TEST_POSTGRES_URL /
PREFECT_BEAMLINE_TEST_MARIADB_URL name a server (CI sets both) and are skipped only when
the variable is unset: a configured server that is down fails the test. Each test gets
its own PostgreSQL schema or MariaDB database, dropped afterwards, so tests running in
parallel never see each other's rows. Server cases carry the `database` marker
(`-m "not database"` runs SQLite only).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from prefect_beamline.lims import Lims
from prefect_beamline.stack import LocalStack, embedded_stack
from tests.rabbit import rabbit_vhost, zocalo_config  # noqa: F401  (Zocalo tests' fixtures)

LIMS_DATABASES = ("sqlite", "postgresql", "mariadb")
# The Beamline Compute block the session stack's flows compute on: local threads unless
# a test points it at a Dask cluster (and back).
E2E_COMPUTE_BLOCK = "e2e-compute"
# The beamline whose grid scans the stack's MX flow publishes for dodal (tests/e2e/test_zocalo.py):
# results go to RabbitMQ's queue xrc.<beamline> on the default vhost; no other test's beamline.
ZOCALO_E2E_BEAMLINE = "zb-e2e"
SERVER_URL_VARIABLES = {
    "postgresql": "PREFECT_BEAMLINE_TEST_POSTGRES_URL",
    "mariadb": "PREFECT_BEAMLINE_TEST_MARIADB_URL",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("lims_url") in SERVER_URL_VARIABLES:
            item.add_marker(pytest.mark.database)


def _server_database(kind: str) -> Iterator[str]:
    """URL of a fresh, empty schema (PostgreSQL) or database (MariaDB), dropped afterwards."""
    variable = SERVER_URL_VARIABLES[kind]
    base_url = os.environ.get(variable)
    if not base_url:
        pytest.skip(f"{variable} is not set: no {kind} server configured")
    name = f"lims_test_{uuid.uuid4().hex[:16]}"
    url = make_url(base_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    if kind == "postgresql":
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
        test_url = url.update_query_dict({"options": f"-csearch_path={name}"})
    else:
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE IF EXISTS `{name}`"
        test_url = url.set(database=name)
    try:
        with admin.connect() as connection:
            connection.execute(text(create))
        try:
            yield test_url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(drop))
    finally:
        admin.dispose()


@pytest.fixture(params=LIMS_DATABASES)
def lims_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty database of each kind (no tables yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lims.db'}"
        return
    yield from _server_database(request.param)


@pytest.fixture
def lims(lims_url: str) -> Iterator[Lims]:
    """A `Lims` with its schema created, on each kind of database."""
    client = Lims(lims_url)
    client.create_schema()
    yield client
    client.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One embedded stack (own Prefect server on SQLite, `serve` of every deployment in
    prefect.yaml, gateway) shared by the end-to-end tests of every technique; its flows
    compute where the block E2E_COMPUTE_BLOCK says. Its data root is the session's temporary
    folder, which holds every test's tmp_path; its runner exposes metrics and every process
    writes spans to `stack.trace_file`."""
    with embedded_stack(
        tmp_path_factory.mktemp("stack"),
        api_url=None,
        compute_block=E2E_COMPUTE_BLOCK,
        data_roots=[tmp_path_factory.getbasetemp()],
        observe=True,
        settings={"PREFECT_BEAMLINE_ZOCALO_XRC_BEAMLINES": f'["{ZOCALO_E2E_BEAMLINE}"]'},
    ) as running:
        yield running
