"""What `prefect-beamline demo mx` must report (run by tests/e2e/test_demos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The demo's options in the test: small, as the docs' example runs it.
OPTIONS: dict[str, Any] = {"n_images": 6}


def check(report: dict[str, Any]) -> None:
    """The demo's report shows the collection processed and where the results are."""
    assert report["triggered_by"].startswith("automation:demo-")
    assert report["n_images"] == 6
    assert [row["image_number"] for row in report["per_image"]] == list(range(1, 7))
    assert all(row["n_spots"] > 10 and row["d_min"] for row in report["per_image"])
    assert Path(report["results_dir"], "per_image.csv").is_file()
    assert report["lims_url"].startswith("sqlite:///")
    assert report["lims"][0]["n_image_quality_rows"] == 6
    assert report["ui_url"].endswith(report["flow_run_id"])
