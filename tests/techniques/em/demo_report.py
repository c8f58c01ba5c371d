"""What `prefect-beamline demo em` must report (run by tests/e2e/test_demos.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The demo's options in the test: small, as the docs' example runs it.
OPTIONS: dict[str, Any] = {"n_images": 2}


def check(report: dict[str, Any]) -> None:
    """The demo's report shows the collection processed and where the results are."""
    assert [run["state"] for run in report["movie_runs"]] == ["COMPLETED", "COMPLETED"]
    assert report["summary_run"]["state"] == "COMPLETED"
    assert report["star_rows"] == 2
    assert len(report["movies"]) == 2
    for movie in report["movies"]:
        assert movie["max_shift_error_px"] < 0.5
        assert abs(movie["defocus_error_pct"]) < 2.0
        assert movie["angle_error_deg"] < 5.0
        assert movie["fit_resolution_angstrom"] > 0
    assert Path(report["star_file"]).is_file()
