"""Fixtures of the gateway tests: the gateway app as configured for them (a token, an
operator token, data under /data, Prefect unreachable) and a real Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prefect_beamline.settings import BeamlineSettings
from tests.gateway.test_app import make_app, make_settings
from tests.gateway.test_prefect import PrefectServer


@pytest.fixture
def settings(tmp_path: Path) -> BeamlineSettings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: BeamlineSettings) -> Iterator[TestClient]:
    """A client from another host (TestClient's address is "testclient")."""
    with TestClient(make_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of this module's own, which its tests may stop and restart."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
