"""MX rows of the LIMS on every database: per-image quality indicators and the grid
result, written idempotently per program and read back as the analysis's own records."""

from __future__ import annotations

import threading
import time

import pytest

from prefect_beamline.events import GridScan
from prefect_beamline.lims import Lims
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.analysis import GridResult, ImageQuality
from prefect_beamline.techniques.mx.records import ImageQualityIndicators
from tests.helpers import DC, collection_event
from tests.lims.helpers import all_at_once, count, new_job, quality_rows, start

GRID = GridScan(steps_x=4, steps_y=3, dx_um=10, dy_um=10)


def record_collection(lims: Lims, collection_id: int = DC, grid: GridScan | None = None) -> None:
    lims.record_data_collection(
        collection_event(
            collection_id,
            grid=grid,
            data_file=f"/data/i03/mx12345-3/xtal_{collection_id}_master.h5",
        )
    )


def mx_program(lims: Lims, run_key: str = "run-1", grid: GridScan | None = None) -> int:
    """A running spot-finding program of collection DC, one per run key."""
    record_collection(lims, DC, grid)
    return start(lims, new_job(lims, run_key, record=False))


def n_quality_rows(lims: Lims) -> int:
    return count(lims, ImageQualityIndicators)


def test_image_quality_rows_round_trip(lims: Lims) -> None:
    program = mx_program(lims)
    rows = quality_rows(range(1, 11))
    records.record_image_quality(lims, program, DC, rows)
    assert records.image_quality(lims, program) == rows


def test_image_quality_rewrite_updates_without_duplicates(lims: Lims) -> None:
    program = mx_program(lims)
    records.record_image_quality(lims, program, DC, quality_rows(range(1, 101)))
    changed = ImageQuality(5, 99, 1.0, None)
    records.record_image_quality(lims, program, DC, [changed])
    stored = records.image_quality(lims, program)
    assert len(stored) == 100 and n_quality_rows(lims) == 100
    assert stored[4] == changed
    assert stored[5] == quality_rows(range(6, 7))[0]


def test_image_quality_repeated_within_one_call_counts_once(lims: Lims) -> None:
    program = mx_program(lims)
    records.record_image_quality(lims, program, DC, [ImageQuality(1, 1, 1.0, None)] * 2)
    records.record_image_quality(
        lims, program, DC, [ImageQuality(1, 1, 1.0, None), *quality_rows(range(1, 2))]
    )
    assert records.image_quality(lims, program) == quality_rows(range(1, 2))


def test_racing_image_quality_writers_do_not_duplicate(lims: Lims) -> None:
    program = mx_program(lims)
    chunks = [quality_rows(range(start, start + 50)) for start in (1, 26, 51, 76)]
    turn = iter(range(4))
    lock = threading.Lock()

    def write_a_chunk() -> None:
        with lock:
            chunk = chunks[next(turn)]
        records.record_image_quality(lims, program, DC, chunk)
        records.record_image_quality(lims, program, DC, chunk)

    all_at_once(4, write_a_chunk)
    assert [row.image_number for row in records.image_quality(lims, program)] == list(range(1, 126))
    assert n_quality_rows(lims) == 125


def test_thousands_of_image_quality_rows_take_one_quick_call(lims: Lims) -> None:
    program = mx_program(lims)
    rows = quality_rows(range(1, 5001))
    began = time.perf_counter()
    records.record_image_quality(lims, program, DC, rows)
    records.record_image_quality(lims, program, DC, rows)
    elapsed = time.perf_counter() - began
    assert n_quality_rows(lims) == 5000
    assert elapsed < 10.0, f"writing 2 x 5000 rows took {elapsed:.1f} s"


def test_image_quality_of_another_collection_is_rejected(lims: Lims) -> None:
    program = mx_program(lims)
    record_collection(lims, 43)
    with pytest.raises(ValueError, match="processes dataCollectionId 42, not 43"):
        records.record_image_quality(lims, program, 43, quality_rows(range(1, 3)))


def test_grid_result_is_recorded_once_per_program_and_updated(lims: Lims) -> None:
    program = mx_program(lims, grid=GRID)
    first = records.record_grid_result(lims, program, DC, GridResult(1.5, 2.0, 1, 1, 2, 3, 57))
    better = GridResult(1.25, 2.0, 1, 1, 2, 2, 60, "success", max_voxel_x=1, total_count=180.0)
    assert records.record_grid_result(lims, program, DC, better) == first
    assert records.grid_result(lims, program) == better


def test_grid_result_status_must_be_ispyb_s() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        GridResult(0, 0, 0, 0, 0, 0, 1, "ok")


def test_each_program_reads_back_its_own_rows_and_grid_result(lims: Lims) -> None:
    automatic = mx_program(lims, "run-1", grid=GRID)
    records.record_image_quality(lims, automatic, DC, quality_rows(range(1, 5)))
    records.record_grid_result(lims, automatic, DC, GridResult(0.5, 0.5, 0, 0, 1, 1, 12))
    manual = mx_program(lims, "run-2", grid=GRID)
    assert len(records.image_quality(lims, automatic)) == 4
    assert records.grid_result(lims, automatic) == GridResult(0.5, 0.5, 0, 0, 1, 1, 12)
    assert (len(records.image_quality(lims, manual)), records.grid_result(lims, manual)) == (
        0,
        None,
    )


def test_overloads_per_image_round_trip(lims: Lims) -> None:
    program = mx_program(lims)
    rows = [ImageQuality(i, 10, 100.0, 2.0, n_overloads=i % 3) for i in range(1, 6)]
    records.record_image_quality(lims, program, DC, rows)
    assert [row.n_overloads for row in records.image_quality(lims, program)] == [1, 2, 0, 1, 2]
