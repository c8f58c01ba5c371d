"""What `prefect-beamline demo ptycho` must report (run by tests/e2e/test_demos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The demo's options in the test: small, as the docs' example runs it.
OPTIONS: dict[str, Any] = {}


def check(report: dict[str, Any]) -> None:
    """The demo's report shows the collection processed and where the results are."""
    assert report["flow_run_id"] and report["ui_url"].endswith(report["flow_run_id"])
    assert report["n_positions"] == 100 and report["iterations"] == 100
    assert 0 < report["final_error"] < 0.01
    assert report["phase_nrmse_vs_truth"] <= 0.1
    results = Path(report["results_dir"])
    assert (results / "reconstruction.h5").is_file() and (results / "object_phase.png").is_file()
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["lims_ptycho_results"][0]["iterations"] == 100
