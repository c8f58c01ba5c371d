"""What `prefect-beamline demo tomo` must report (run by tests/e2e/test_demos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The demo's options in the test: small, as the docs' example runs it.
OPTIONS: dict[str, Any] = {"n_images": 90}


def check(report: dict[str, Any]) -> None:
    """The demo's report shows the collection processed and where the results are."""
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["n_projections"] == 90
    assert report["shape"] == [16, 160, 160]
    assert abs(report["centre_of_rotation"] - report["centre_of_rotation_true"]) < 0.5
    assert Path(report["results_dir"], "volume.h5").is_file()
    assert report["tomogram"]["size_z"] == 16
    assert report["lims"][0]["program_status"] == "success"
    assert report["ui_url"].endswith(report["flow_run_id"])
