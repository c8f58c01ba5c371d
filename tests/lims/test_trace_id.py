"""A processing job keeps the trace id of the run that made it (issue 12): ISPyB's
ProcessingJob has no column for it, so it is a reserved ProcessingJobParameter."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from sqlalchemy import select

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import ProcessingJobParameter
from tests.helpers import DC, collection_event
from tests.lims.helpers import MX_PARAMETERS

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def record(
    lims: Lims,
    *,
    trace_id: str | None = None,
    parameters: Mapping[str, object] = MX_PARAMETERS,
) -> int:
    return lims.record_processing_job(
        data_collection_id=DC,
        recipe="mx-rotation",
        display_name="mx-rotation (run-1)",
        automatic=True,
        triggered_by="automation:e",
        parameters=parameters,
        run_key="run-1",
        trace_id=trace_id,
    )


def test_job_records_its_trace_id_as_an_ispyb_parameter_row(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    job_id = record(lims, trace_id=TRACE_ID)
    with lims.transaction(write=False) as session:
        stored = session.scalar(
            select(ProcessingJobParameter.parameterValue).filter_by(
                processingJobId=job_id, parameterKey="trace_id"
            )
        )
    assert stored == TRACE_ID
    (job,) = lims.jobs_for_collection(DC)
    assert job.trace_id == TRACE_ID
    assert job.parameters == MX_PARAMETERS  # not mistaken for a processing parameter


def test_job_without_a_trace_has_none(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    record(lims)
    assert lims.jobs_for_collection(DC)[0].trace_id is None


def test_trace_id_is_a_reserved_parameter_name(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    with pytest.raises(ValueError, match="'trace_id' is reserved"):
        record(lims, parameters={"trace_id": "mine"})
