"""Where chunks run is the operator's Compute block: a missing block fails every technique's
run cleanly, with the block named, and leaves no job running for good."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques import registry, technique
from tests.conftest import E2E_COMPUTE_BLOCK
from tests.e2e.compute import stack_compute_block_missing

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", sorted(registry()))
def test_a_missing_compute_block_fails_the_run_and_its_lims_job_naming_the_block(
    name: str, stack: LocalStack, tmp_path: Path
) -> None:
    options = importlib.import_module(f"tests.techniques.{name}.demo_report").OPTIONS
    with stack_compute_block_missing(stack):
        report = technique(name).module("demo").run_demo(tmp_path, stack=stack, **options)

    assert report["state"] == "FAILED"
    jobs = stack.lims.jobs_for_collection(report["collection_id"])
    unfinished = [job for job in jobs if job.program_status in ("queued", "running")]
    assert not unfinished, [(job.recipe, job.program_status) for job in unfinished]
    failed = [job for job in jobs if job.program_status == "failed"]
    assert failed
    assert all(E2E_COMPUTE_BLOCK in (job.program_message or "") for job in failed)
