"""Chunks as Slurm jobs: the server's Compute block names a Slurm cluster (dask-jobqueue),
an MX collection is announced, and its chunks run on Dask workers that Slurm started.

Needs a running Slurm (`.ci/slurm-up` makes a one-node one; CI runs it and sets
PREFECT_BEAMLINE_TEST_SLURM=1). Skipped only on a machine without Slurm's commands and
without that variable; a Slurm that is installed or expected but not running fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.logging import disable_run_logger

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.blocks.slurm import SlurmJobs
from prefect_beamline.flows.mx import MXParameters, data_signature, find_spots_in_images
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.compute import stack_computes_on
from tests.e2e.helpers import completed_run, next_collection_id
from tests.e2e.test_mx import ROTATION, announce_mx

pytestmark = pytest.mark.e2e
SLURM_EXPECTED = "PREFECT_BEAMLINE_TEST_SLURM"
CHUNK_LOG = re.compile(r"images (\d+)-(\d+) on .*, slurm job (\d+)$", re.MULTILINE)


@pytest.fixture
def slurm_node() -> None:
    """A node that takes jobs, else skip (no Slurm here, none expected) or fail; checked
    before the stack starts."""
    expected = os.environ.get(SLURM_EXPECTED) == "1"
    if shutil.which("sinfo") is None:
        if expected:
            pytest.fail(f"{SLURM_EXPECTED}=1 but Slurm is not installed: run .ci/slurm-up")
        pytest.skip("Slurm is not installed on this machine (no sinfo): run .ci/slurm-up as root")
    states = subprocess.run(
        ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30
    )
    if not {"idle", "mixed"} & set(states.stdout.split()):
        pytest.fail(
            "Slurm is installed but has no node taking jobs (run .ci/slurm-up): "
            f"sinfo said {states.stdout.strip() or states.stderr.strip()!r}"
        )


def slurm_jobs(job_name: str) -> dict[str, str]:
    """Job id -> state of every job of that name slurmctld still knows (finished ones too)."""
    listed = subprocess.run(
        ["squeue", "--states=all", f"--name={job_name}", "--noheader", "--format=%i %T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split() for line in listed.stdout.splitlines() if line.strip())


def chunks_run_by_jobs(log_directory: Path) -> dict[tuple[int, int], tuple[str, str, str]]:
    """(first, last) image of each chunk -> (the job whose output file holds the chunk's
    log line, the SLURM_JOB_ID the chunk saw in its environment, the line)."""
    ran: dict[tuple[int, int], tuple[str, str, str]] = {}
    for output in log_directory.glob("*.err"):
        job_id = output.stem.rsplit("-", 1)[1]
        for match in CHUNK_LOG.finditer(output.read_text()):
            ran[int(match[1]), int(match[2])] = (job_id, match[3], match[0])
    return ran


def logged_in_prefect(stack: LocalStack, flow_run_id: str, wanted: set[str]) -> set[str]:
    """Which of the `wanted` log lines the run and its subflows stored in Prefect (what the
    UI shows); the log handler sends in batches, so poll a while."""
    flows = httpx.post(
        f"{stack.api_url}/flow_runs/filter",
        json={"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}},
        timeout=10.0,
    )
    flows.raise_for_status()
    run_ids = [flow_run_id, *(run["id"] for run in flows.json())]
    deadline = time.monotonic() + 15.0
    while True:
        response = httpx.post(
            f"{stack.api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200},
            timeout=10.0,
        )
        response.raise_for_status()
        found = wanted & {log["message"] for log in response.json()}
        if found == wanted or time.monotonic() > deadline:
            return found


def test_chunks_run_as_slurm_jobs_the_compute_block_describes(
    slurm_node: None, stack: LocalStack, tmp_path: Path
) -> None:
    job_name = f"beamline-test-{uuid.uuid4().hex[:8]}"
    slurm_logs = tmp_path / "slurm-logs"
    slurm = SlurmJobs(
        cores=1,
        memory="1GiB",
        walltime="00:10:00",
        python=sys.executable,  # the test's virtualenv, on this one node
        job_name=job_name,
        log_directory=str(slurm_logs),
        maximum_jobs=2,
        # The workers hold their Prefect logs for a minute, longer than the run lasts:
        # only the runner's asking them to send before it cancels the jobs gets the chunks'
        # log lines to the UI.
        job_extra_directives=["--export=ALL,PREFECT_LOGGING_TO_API_BATCH_INTERVAL=60"],
    )
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=6, seed=29)
    try:
        with stack_computes_on(stack, Compute(slurm=slurm)):
            announce_mx(stack, synthetic.master_file, collection_id, images_per_chunk=2)
            flow_run_id = completed_run(stack, ROTATION, collection_id)
        jobs = slurm_jobs(job_name)
    finally:
        subprocess.run(["scancel", f"--name={job_name}"], check=False, timeout=30)

    # Slurm ran the workers: jobs of this block's name, ended when the run's chunks were done.
    assert jobs, f"no Slurm job named {job_name}"
    assert len(jobs) <= slurm.maximum_jobs
    assert set(jobs.values()) <= {"COMPLETED", "CANCELLED"}, jobs
    # Every chunk ran in one of those jobs: its log line is in that job's output file
    # (Slurm names it by job id) and names the job Slurm set in the chunk's environment.
    ran = chunks_run_by_jobs(slurm_logs)
    assert set(ran) == {(1, 2), (3, 4), (5, 6)}, ran
    assert all(file_job == environment_job for file_job, environment_job, _ in ran.values()), ran
    assert {job_id for job_id, _, _ in ran.values()} <= set(jobs), (ran, jobs)
    # and the UI shows those lines: the workers sent them before their jobs were cancelled.
    lines = {line for _, _, line in ran.values()}
    assert logged_in_prefect(stack, flow_run_id, lines) == lines

    # The same numbers as the flow's chunk computed here, on the test's own thread.
    job = stack.lims.jobs_for_collection(collection_id)[0]
    stored = records.image_quality(stack.lims, job.program_id or -1)
    master = str(synthetic.master_file)
    with disable_run_logger():
        expected = find_spots_in_images.fn(master, data_signature(master), 1, 6, MXParameters())
    assert [(q.image_number, q.n_spots) for q in stored] == [
        (q.image_number, q.n_spots) for q in expected
    ]
    assert [q.total_intensity for q in stored] == pytest.approx(
        [q.total_intensity for q in expected]
    )
    assert all(q.n_spots > 20 for q in stored)  # the synthetic images hold ~40 spots each
