"""The end-of-collection flow reuses the live job: its rows, and only the images the live
run did not record (a live worker killed mid-frame) are analysed again."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.flows.common import Job
from prefect_beamline.flows.live import LIVE_RECIPE, reuse_live_results
from prefect_beamline.lims import Lims
from prefect_beamline.live.sinks import LimsResultsWriter
from prefect_beamline.techniques.mx.analysis import ImageQuality
from tests.helpers import DC
from tests.lims.helpers import new_job, start


@pytest.fixture
def live_job(lims: Lims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Job:
    program = start(lims, new_job(lims, "live-run", recipe=LIVE_RECIPE))
    monkeypatch.setattr(Job, "lims", lambda self: lims)
    return Job(lims.get_collection(DC), 1, program, LIVE_RECIPE, tmp_path)  # type: ignore[arg-type]


def test_rows_written_live_are_reused_and_the_gaps_named(lims: Lims, live_job: Job) -> None:
    writer = LimsResultsWriter(lims, live_job.program_id, DC, interval_s=0.0)
    for number in [1, 2, 3, 6, 7, 10]:  # 4, 5, 8, 9 lost with a killed worker
        writer.add(ImageQuality(number, n_spots=number, total_intensity=1.0, d_min_angstrom=2.0))
    writer.close()
    images, missing = reuse_live_results.fn(live_job, 1, 10, wait_s=0.0)
    assert [image.image_number for image in images] == [1, 2, 3, 6, 7, 10]
    assert [image.n_spots for image in images] == [1, 2, 3, 6, 7, 10]
    assert missing == [(4, 5), (8, 9)]


def test_a_live_job_without_rows_leaves_every_image_to_analyse(live_job: Job) -> None:
    assert reuse_live_results.fn(live_job, 3, 7, wait_s=0.0) == ([], [(3, 7)])
