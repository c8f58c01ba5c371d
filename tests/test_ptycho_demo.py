"""`prefect-beamline demo ptycho --json`, as docs/ptychography.md tells a user to run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prefect_beamline.stack import cli

pytestmark = pytest.mark.e2e


def test_ptycho_demo_reconstructs_the_synthetic_scan_and_reports_it(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("demo", "ptycho", "--json", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["state"] == "COMPLETED"
    assert report["flow_run_id"] and report["ui_url"].endswith(report["flow_run_id"])
    assert report["n_positions"] == 100 and report["iterations"] == 100
    assert 0 < report["final_error"] < 0.01
    assert report["phase_nrmse_vs_truth"] <= 0.1
    results = Path(report["results_dir"])
    assert (results / "reconstruction.h5").is_file() and (results / "object_phase.png").is_file()
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["lims_ptycho_results"][0]["iterations"] == 100
