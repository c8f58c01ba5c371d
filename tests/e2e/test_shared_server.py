"""The demo on a Prefect server it did not start (PREFECT_API_URL set) and that has no
prefect-beamline deployments: it runs there, and leaves nothing of its own behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from prefect_beamline.stack import cli, embedded_stack

pytestmark = pytest.mark.e2e


def test_the_demo_on_a_shared_server_removes_what_it_registered(tmp_path: Path) -> None:
    with embedded_stack(tmp_path / "server", serve=False, gateway=False) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_BEAMLINE_")}
        env["PREFECT_API_URL"] = server.api_url
        env["PREFECT_BEAMLINE_LIMS_URL"] = f"sqlite:///{tmp_path / 'facility-lims.db'}"
        done = subprocess.run(
            cli("demo", "--json", "--workdir", str(tmp_path / "demo")),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["state"] == "COMPLETED"
        assert report["ui_url"].startswith(server.ui_url)
        assert report["lims_url"] == env["PREFECT_BEAMLINE_LIMS_URL"]  # the one it was given
        for kind in ("deployments", "automations"):
            left = httpx.post(f"{server.api_url}/{kind}/filter", json={}, timeout=10.0).json()
            assert left == [], kind
