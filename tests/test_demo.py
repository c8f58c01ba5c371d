"""`prefect-beamline demo --json`, exactly as the README tells a new user to run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prefect_beamline.stack import cli

pytestmark = pytest.mark.e2e


def test_demo_runs_the_facility_path_and_reports_it(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("demo", "--json", "--images", "6", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["state"] == "COMPLETED"
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["n_images"] == 6
    assert [row["image_number"] for row in report["per_image"]] == list(range(1, 7))
    assert all(row["n_spots"] > 10 and row["d_min"] for row in report["per_image"])
    assert Path(report["results_dir"], "per_image.csv").is_file()
    assert report["lims_url"].startswith("sqlite:///")
    assert report["lims"][0]["n_image_quality_rows"] == 6
    assert report["ui_url"].endswith(report["flow_run_id"])
