"""One job per accepted event, held by the LIMS itself on SQLite, PostgreSQL and MariaDB.

Prefect's event dedupe is in memory and forgotten on a restart; these tests are what
remains: a second run key asking for the same event and recipe never gets a job.
"""

from __future__ import annotations

import itertools

import pytest

from prefect_beamline.lims import EventAlreadyProcessed, Lims
from prefect_beamline.lims.schema import ProcessingJob, ProcessingJobTrigger
from tests.helpers import DC, collection_event
from tests.lims.helpers import MX_PARAMETERS, all_at_once, count

EVENT = "daq-event-42"


def job_for_event(
    lims: Lims, run_key: str, *, event: str | None = EVENT, recipe: str = "mx-rotation"
) -> int:
    """The automatic job of `run_key`, claimed for `event` (no claim when None)."""
    return lims.record_processing_job(
        data_collection_id=DC,
        recipe=recipe,
        display_name=f"{recipe} ({run_key})",
        automatic=event is not None,
        triggered_by=f"automation:{event}" if event else "cli:alice",
        parameters=MX_PARAMETERS,
        run_key=run_key,
        trigger_event=event,
    )


def outcome(lims: Lims, run_key: str) -> int | EventAlreadyProcessed:
    try:
        return job_for_event(lims, run_key)
    except EventAlreadyProcessed as refused:
        return refused


def test_second_run_of_an_event_finds_the_first_job(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    first = job_for_event(lims, "run-1")
    with pytest.raises(EventAlreadyProcessed) as refused:
        job_for_event(lims, "run-2")
    assert (refused.value.processing_job_id, refused.value.run_key) == (first, "run-1")
    assert f"job {first}" in str(refused.value) and "run-1" in str(refused.value)
    assert count(lims, ProcessingJob) == 1


def test_retry_of_the_same_run_reuses_its_job(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    first = job_for_event(lims, "run-1")
    assert job_for_event(lims, "run-1") == first
    assert count(lims, ProcessingJobTrigger) == 1


def test_manual_reruns_and_other_recipes_are_new_jobs(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    automatic = job_for_event(lims, "run-1")
    manual = job_for_event(lims, "run-2", event=None)
    other_recipe = job_for_event(lims, "run-3", recipe="mx-gridscan")
    assert len({automatic, manual, other_recipe}) == 3


def test_racing_runs_of_one_event_record_one_job(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    numbers = itertools.count()  # next() of a count is atomic: one key per thread
    outcomes = all_at_once(6, lambda: outcome(lims, f"run-{next(numbers)}"))
    jobs = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, EventAlreadyProcessed)]
    assert len(jobs) == 1 and len(refused) == 5
    assert {r.processing_job_id for r in refused} == set(jobs)
    assert count(lims, ProcessingJob) == 1


def test_too_long_event_id_is_rejected_naming_the_column(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    with pytest.raises(ValueError, match="ProcessingJobTrigger.eventId"):
        job_for_event(lims, "run-1", event="e" * 201)
