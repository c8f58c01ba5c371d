"""`prefect-beamline demo em --json`, as docs/cryoem.md tells a new user to run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prefect_beamline.stack import cli

pytestmark = pytest.mark.e2e


def test_em_demo_processes_every_movie_and_reports_shifts_and_ctf(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("demo", "em", "--json", "--images", "2", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["state"] == "COMPLETED"
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
