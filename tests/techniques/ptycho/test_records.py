"""The PtychographyResult extension of the LIMS: one row per program, idempotent, found
by collection and by processing job (what `probe_from=<job id>` uses). Runs on SQLite,
PostgreSQL and MariaDB (the `lims` fixture)."""

from __future__ import annotations

import pytest

from prefect_beamline.lims import Lims
from prefect_beamline.techniques.ptycho import records
from prefect_beamline.techniques.ptycho.records import PtychoResult
from tests.helpers import collection_event
from tests.lims.helpers import new_job, start

DC = 5900


def ptycho_collection(lims: Lims) -> None:
    lims.record_data_collection(collection_event(DC, technique="ptycho"))


def new_program(lims: Lims, run_key: str) -> tuple[int, int]:
    job = new_job(
        lims,
        run_key,
        collection_id=DC,
        recipe="ptycho",
        parameters={"iterations": 10},
        record=False,
    )
    return job, start(lims, job, programs="ptycho")


def result(algorithm: str = "epie", iterations: int = 100, error: float = 1e-3) -> PtychoResult:
    return PtychoResult(
        algorithm=algorithm,
        iterations=iterations,
        n_positions=100,
        final_error=error,
        object_pixel_m=2.08e-7,
        reconstruction_file="/data/i14/cm12345-1/processing/ptycho/dc5900-job1/reconstruction.h5",
    )


def test_ptycho_result_is_one_row_per_program_and_updated(lims: Lims) -> None:
    ptycho_collection(lims)
    job, program = new_program(lims, "run-1")
    first = records.record_ptycho_result(lims, program, DC, result(iterations=20))
    assert (
        records.record_ptycho_result(lims, program, DC, result(iterations=40, error=5e-4)) == first
    )
    (row,) = records.ptycho_results(lims, DC)
    assert (row.iterations, row.final_error, row.processing_job_id) == (40, 5e-4, job)
    assert row.object_pixel_m == pytest.approx(2.08e-7)


def test_reruns_keep_their_own_rows_and_are_found_by_job(lims: Lims) -> None:
    ptycho_collection(lims)
    _, first_program = new_program(lims, "run-1")
    second_job, second_program = new_program(lims, "run-2")
    records.record_ptycho_result(lims, first_program, DC, result())
    records.record_ptycho_result(lims, second_program, DC, result("rpie", 10))
    assert [r.algorithm for r in records.ptycho_results(lims, DC)] == ["epie", "rpie"]
    found = records.ptycho_result_of_job(lims, second_job)
    assert found is not None and found.algorithm == "rpie" and found.iterations == 10
    assert records.ptycho_result_of_job(lims, second_job + 100) is None


def test_unknown_algorithm_is_refused(lims: Lims) -> None:
    ptycho_collection(lims)
    _, program = new_program(lims, "run-1")
    with pytest.raises(ValueError, match="algorithm"):
        records.record_ptycho_result(lims, program, DC, result("dm"))
