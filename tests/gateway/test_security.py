"""Closed by default: the gateway does not start open, `/health` tells strangers only
counts, each token opens only its own endpoints, and data must lie under a data root."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.settings import BeamlineSettings
from prefect_beamline.stack import cli, free_port
from tests.gateway.test_app import (
    CLOSED_PORT_API,
    OPERATOR_TOKEN,
    TOKEN,
    event_body,
    make_app,
    make_settings,
    post,
    stored,
)

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
DAQ = {"Authorization": f"Bearer {TOKEN}"}


def gateway_environment(home: Path, **settings: str) -> dict[str, str]:
    """This environment without any PREFECT_BEAMLINE_ setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_BEAMLINE_")}
    env.update({"PREFECT_BEAMLINE_HOME": str(home), "PREFECT_API_URL": CLOSED_PORT_API})
    env.update({f"PREFECT_BEAMLINE_{name.upper()}": value for name, value in settings.items()})
    return env


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("host", "settings", "named"),
    [
        ("0.0.0.0", {}, "PREFECT_BEAMLINE_GATEWAY_TOKEN"),
        ("0.0.0.0", {"gateway_allow_unauthenticated_loopback": "true"}, "GATEWAY_TOKEN"),
        ("127.0.0.1", {"gateway_token": ""}, "PREFECT_BEAMLINE_GATEWAY_TOKEN is set but empty"),
        ("0.0.0.0", {"gateway_token": "  "}, "PREFECT_BEAMLINE_GATEWAY_TOKEN is set but empty"),
    ],
)
def test_the_gateway_command_does_not_start_open(
    tmp_path: Path, host: str, settings: dict[str, str], named: str
) -> None:
    port = free_port()
    process = subprocess.Popen(
        cli("gateway", "--host", host, "--port", str(port)),
        env=gateway_environment(tmp_path, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, error = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        was_listening = listening(port)
        process.kill()
        process.communicate()
        pytest.fail(f"the gateway kept running on {host} (listening: {was_listening})")
    assert process.returncode != 0
    assert named in error
    assert len(error.strip().splitlines()) == 1, error  # one line, no traceback
    assert not listening(port)
    assert not (tmp_path / "gateway.db").exists()  # refused before the outbox was opened


@pytest.mark.parametrize(
    ("host", "changes", "named"),
    [
        ("127.0.0.1", {"gateway_token": None}, "PREFECT_BEAMLINE_GATEWAY_TOKEN"),
        ("::", {"gateway_token": None}, "PREFECT_BEAMLINE_GATEWAY_TOKEN"),
        ("127.0.0.1", {"gateway_hmac_secret": " "}, "PREFECT_BEAMLINE_GATEWAY_HMAC_SECRET"),
        ("127.0.0.1", {"operator_token": ""}, "PREFECT_BEAMLINE_OPERATOR_TOKEN is set but"),
        ("127.0.0.1", {"operator_token": TOKEN}, "must differ"),
    ],
)
def test_configurations_that_would_be_open_are_refused(
    tmp_path: Path, host: str, changes: dict[str, Any], named: str
) -> None:
    from prefect_beamline.gateway.auth import GatewayAccess, GatewayConfigError

    with pytest.raises(GatewayConfigError, match=named):
        GatewayAccess.from_settings(make_settings(tmp_path, **changes), host)


def test_loopback_without_tokens_only_with_the_explicit_opt_in(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        gateway_token=None,
        operator_token=None,
        gateway_allow_unauthenticated_loopback=True,
    )
    with TestClient(make_app(settings)) as client:
        response = client.post("/api/v1/collections", content=json.dumps(event_body()))
        listing = client.get("/api/v1/outbox")
    assert response.status_code == 202
    assert listing.status_code == 200 and len(listing.json()) == 1


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(make_settings(tmp_path))) as test_client:
        yield test_client


def test_health_without_a_token_shows_status_and_counts_only(client: TestClient) -> None:
    post(client, event_body())
    status = client.app.state.drainer.status  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while status.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the drainer fails to reach the closed port
    public = client.get("/health")
    assert public.status_code == 200
    assert set(public.json()) == {"status", "pending", "outbox", "emitted_since_start"}
    assert public.json()["pending"] == 1
    assert "unreachable" not in public.text and "127.0.0.1" not in public.text
    detailed = client.get("/health", headers=OPERATOR).json()
    assert detailed["prefect_api_url"] == CLOSED_PORT_API
    assert "unreachable" in detailed["last_error"] and detailed["prefect_reachable"] is False


def test_an_unreadable_outbox_is_reported_without_its_error_text(client: TestClient) -> None:
    from sqlalchemy.exc import OperationalError

    def broken() -> None:
        raise OperationalError("SELECT", {}, Exception("/var/lib/secret.db locked"))

    client.app.state.outbox.counts = broken  # type: ignore[attr-defined]
    public = client.get("/health")
    assert public.status_code == 503 and public.json() == {"status": "error"}
    detailed = client.get("/health", headers=OPERATOR)
    assert detailed.status_code == 503 and "secret.db" in detailed.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/v1/outbox", DAQ, 403),
        ("GET", "/api/v1/outbox", {}, 401),
        ("GET", "/api/v1/outbox", {"Authorization": "Bearer wrong"}, 401),
        ("GET", "/api/v1/outbox", OPERATOR, 200),
        ("GET", "/health", DAQ, 403),
        ("GET", "/health", {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/api/v1/collections", OPERATOR, 403),
        ("POST", "/api/v1/collections", DAQ, 202),
    ],
)
def test_each_token_opens_only_its_endpoints(
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = client.request(method, path, content=json.dumps(event_body()), headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "token" in response.json()["detail"]


def test_without_an_operator_token_the_operator_endpoints_are_off(tmp_path: Path) -> None:
    with TestClient(make_app(make_settings(tmp_path, operator_token=None))) as client:
        response = client.get("/api/v1/outbox", headers=DAQ)
    assert response.status_code == 403
    assert "PREFECT_BEAMLINE_OPERATOR_TOKEN" in response.json()["detail"]


def test_tokens_and_bodies_never_reach_the_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = "body-marker-7731"
    post(client, event_body(beamline=marker))
    post(client, event_body(beamline=marker), headers={"Authorization": "Bearer guessed-9"})
    client.get("/api/v1/outbox", headers=OPERATOR)
    client.get("/health", headers=OPERATOR)
    secrets = (TOKEN, OPERATOR_TOKEN, "guessed-9", marker)
    assert not [word for word in secrets if word in caplog.text]


# -- data roots ---------------------------------------------------------------------------


def lims_row(data_file: str) -> CollectionDescription:
    return CollectionDescription(
        collection_id=42,
        beamline="i03",
        visit="mx12345-1",
        technique="mx",
        experiment_type="rotation",
        data_files=[data_file],
        image_range=(1, 10),
        grid=None,
    )


def announce(client: TestClient, endpoint: str, data_file: str) -> Any:
    if endpoint == "collections":
        return post(client, event_body(data_files=[data_file]))
    if endpoint == "zocalo":
        message = {"recipes": ["mimas"], "parameters": {"ispyb_dcid": 42, "event": "end"}}
        return post(client, message, path="/api/v1/zocalo")
    start = {
        "uid": "run-1",
        "technique": "mx",
        "experiment_type": "rotation",
        "beamline": "i03",
        "visit": "mx12345-1",
        "data_collection_id": 42,
        "data_files": [data_file],
    }
    return post(client, {"name": "start", "doc": start}, path="/api/v1/bluesky")


@pytest.mark.parametrize("endpoint", ["collections", "zocalo", "bluesky"])
@pytest.mark.parametrize("data_file", ["/etc/passwd", "/data/i03/../../etc/passwd"])
def test_a_data_file_outside_the_roots_is_422_and_nothing_is_stored(
    tmp_path: Path, endpoint: str, data_file: str
) -> None:
    settings = make_settings(tmp_path)
    with TestClient(make_app(settings, lookup=lambda dcid: lims_row(data_file))) as client:
        response = announce(client, endpoint, data_file)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert data_file in detail and "PREFECT_BEAMLINE_DATA_ROOTS (/data)" in detail
    assert stored(settings) == []


def test_a_symlink_out_of_a_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    settings = make_settings(tmp_path / "home", data_roots=[root])
    inside = root / "i03" / "xtal_master.h5"
    with TestClient(make_app(settings)) as client:
        refused = announce(client, "collections", str(root / "escape" / "xtal_master.h5"))
        accepted = announce(client, "collections", str(inside))
    assert refused.status_code == 422
    assert str(outside / "xtal_master.h5") in refused.json()["detail"]
    assert accepted.status_code == 202
    assert [row.event.data_files for row in stored(settings)] == [[str(inside)]]


def test_without_data_roots_every_announcement_is_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, data_roots=[])
    with TestClient(make_app(settings)) as client:
        response = post(client, event_body())
    assert response.status_code == 422
    assert "PREFECT_BEAMLINE_DATA_ROOTS is not set" in response.json()["detail"]
    assert stored(settings) == []


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        (os.pathsep.join(["/data", "/dls/i03"]), ["/data", "/dls/i03"]),
        ('["/data", "/dls/i03"]', ["/data", "/dls/i03"]),
        ("", []),
    ],
)
def test_data_roots_are_a_path_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, roots: list[str]
) -> None:
    monkeypatch.setenv("PREFECT_BEAMLINE_DATA_ROOTS", value)
    assert BeamlineSettings().data_roots == [Path(root) for root in roots]


def test_a_relative_data_root_is_an_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_BEAMLINE_DATA_ROOTS", "data/i03")
    with pytest.raises(ValueError, match="PREFECT_BEAMLINE_DATA_ROOTS: 'data/i03'"):
        BeamlineSettings()
