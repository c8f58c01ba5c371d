"""`prefect-beamline demo tomo --json`, as docs/tomography.md tells a new user to run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prefect_beamline.stack import cli

pytestmark = pytest.mark.e2e


def test_tomo_demo_reconstructs_the_synthetic_scan_and_reports_it(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("demo", "tomo", "--json", "--images", "90", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["state"] == "COMPLETED"
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["n_projections"] == 90
    assert report["shape"] == [16, 160, 160]
    assert abs(report["centre_of_rotation"] - report["centre_of_rotation_true"]) < 0.5
    assert Path(report["results_dir"], "volume.h5").is_file()
    assert report["tomogram"]["size_z"] == 16
    assert report["lims"][0]["program_status"] == "success"
    assert report["ui_url"].endswith(report["flow_run_id"])
