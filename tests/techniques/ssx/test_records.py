"""SSX rows of the LIMS on every database: ISPyB's SSXDataCollection and
SSXProcessingResult, and the per-chunk hit rates, written idempotently per program."""

from __future__ import annotations

import numpy as np

from prefect_beamline.lims import Lims
from prefect_beamline.techniques.ssx import records
from prefect_beamline.techniques.ssx.analysis import ChunkHitRate, SerialSummary
from prefect_beamline.techniques.ssx.records import SSXDataCollection, SSXProcessingResult
from tests.helpers import DC, collection_event
from tests.lims.helpers import count, new_job, start


def ssx_program(lims: Lims, run_key: str = "run-1") -> int:
    lims.record_data_collection(collection_event(DC, technique="ssx", experiment_type="jet"))
    return start(lims, new_job(lims, run_key, recipe="ssx-processing", record=False))


def chunk(first: int, hits: int) -> ChunkHitRate:
    return ChunkHitRate(first, first + 9, 10, hits, hits / 10, 30.0 if hits else None, 1.7e9)


def summary() -> SerialSummary:
    hit = np.array([True, False, False, True])
    return SerialSummary(
        first_image=1,
        hit=hit,
        n_peaks=np.array([30, 1, 0, 40]),
        radial=np.arange(3.0),
        unit="q_nm^-1",
        hits_profile=np.ones(3),
        blanks_profile=np.ones(3),
        chunks=[chunk(1, 2)],
    )


def test_chunk_hit_rates_are_written_as_chunks_finish_and_rewritten_once(lims: Lims) -> None:
    program = ssx_program(lims)
    records.record_chunk_hit_rates(lims, program, DC, [chunk(11, 3)])
    records.record_chunk_hit_rates(lims, program, DC, [chunk(1, 2)])
    records.record_chunk_hit_rates(lims, program, DC, [chunk(1, 4)])  # a retried chunk
    rows = records.chunk_hit_rates(lims, program)
    assert [(row.first_image, row.n_hits) for row in rows] == [(1, 4), (11, 3)]
    assert rows[0].hit_rate == 0.4


def test_result_row_is_ispyb_shaped_and_one_per_program(lims: Lims) -> None:
    program = ssx_program(lims)
    records.record_ssx_result(lims, program, DC, summary(), "jet")
    records.record_ssx_result(lims, program, DC, summary(), "jet")
    result = records.ssx_result(lims, program)
    assert result is not None
    assert (result.hitRate, result.numberOfFrames, result.numberOfHits) == (0.5, 4, 2)
    assert result.meanPeaksPerHit == 35.0 and result.status == "Success"
    assert count(lims, SSXProcessingResult) == 1
    assert count(lims, SSXDataCollection) == 1
    other = ssx_program(lims, "run-2")
    records.record_ssx_result(lims, other, DC, summary(), "jet")
    assert count(lims, SSXProcessingResult) == 2  # a rerun keeps its own result
    with lims.transaction(write=False) as session:
        assert session.get(SSXDataCollection, DC).experimentName == "SSX-Jet"
