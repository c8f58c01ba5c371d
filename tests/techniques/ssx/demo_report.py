"""What `prefect-beamline demo ssx` must report (run by tests/e2e/test_demos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The demo's options in the test: small, as the docs' example runs it.
OPTIONS: dict[str, Any] = {"n_images": 40}


def check(report: dict[str, Any]) -> None:
    """The demo's report shows the hits found, the CrystFEL files and the LIMS rows."""
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["n_frames"] == 40
    assert report["n_hits"] == report["true_hits"] > 0
    assert report["hit_rate"] == report["n_hits"] / 40
    assert len(report["cxi_peaks_per_hit"]) == report["n_hits"]
    assert min(report["cxi_peaks_per_hit"]) >= 10
    assert Path(report["results_dir"], "hits.lst").is_file()
    assert report["lims_hit_rate"] == report["hit_rate"]
    assert report["lims_chunks"] == 2
    assert report["ui_url"].endswith(report["flow_run_id"])
