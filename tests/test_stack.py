"""The embedded stack's environment: its own state in its folder, except the databases a
facility names."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.stack import stack_environment


def test_the_stack_uses_the_lims_and_outbox_the_caller_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_BEAMLINE_LIMS_URL", "mysql+pymysql://ispyb@lims/ispyb")
    monkeypatch.setenv("PREFECT_BEAMLINE_OUTBOX_URL", "postgresql+psycopg2://gw@db/outbox")
    env = stack_environment(tmp_path, "http://127.0.0.1:1/api", "token", 8787)
    assert env["PREFECT_BEAMLINE_LIMS_URL"] == "mysql+pymysql://ispyb@lims/ispyb"
    assert env["PREFECT_BEAMLINE_OUTBOX_URL"] == "postgresql+psycopg2://gw@db/outbox"


def test_without_them_the_stack_keeps_its_databases_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_BEAMLINE_LIMS_URL", raising=False)
    monkeypatch.delenv("PREFECT_BEAMLINE_OUTBOX_URL", raising=False)
    monkeypatch.setenv("PREFECT_BEAMLINE_GATEWAY_TOKEN", "the-facility-s-token")
    env = stack_environment(tmp_path, "http://127.0.0.1:1/api", "token", 8787)
    assert env["PREFECT_BEAMLINE_LIMS_URL"] == f"sqlite:///{tmp_path / 'beamline' / 'lims.db'}"
    assert env["PREFECT_BEAMLINE_OUTBOX_URL"].startswith(f"sqlite:///{tmp_path}")
    assert env["PREFECT_BEAMLINE_GATEWAY_TOKEN"] == "token"  # the stack's own gateway
