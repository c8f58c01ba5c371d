"""Ptychography through the real stack: webhook -> gateway -> Prefect event -> automation
-> served `ptycho-reconstruction` deployment -> object/probe HDF5, PNGs, LIMS rows,
artifacts, completion event; a CLI rerun with another algorithm and an earlier probe; a
flow-run process killed mid-reconstruction and retried from its checkpoint."""

from __future__ import annotations

import getpass
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from prefect_beamline.runs import wait_for_new_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.ptycho import records
from prefect_beamline.techniques.ptycho.demo import DEPLOYMENT, demo_event
from prefect_beamline.techniques.ptycho.results_file import read_reconstruction
from prefect_beamline.techniques.ptycho.synth import SyntheticScan, write_ptycho_scan
from tests.e2e.helpers import (
    RUN_TIMEOUT_S,
    announce,
    artifacts,
    cli_rerun,
    completed_run,
    final_run,
    next_collection_id,
)
from tests.techniques.ptycho.metrics import is_decreasing

pytestmark = pytest.mark.e2e
MAX_PHASE_NRMSE = 0.1


def phase_error(scan: SyntheticScan, reconstruction_file: str) -> float:
    return scan.phase_nrmse(read_reconstruction(Path(reconstruction_file)).obj)


def test_webhook_reconstructs_the_scan_into_files_lims_and_artifacts(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    scan = write_ptycho_scan(tmp_path / "data", n_positions=100, seed=3)
    event = announce(stack, demo_event(scan.scan_file, collection_id, {"iterations": 60}))
    completed_run(stack, DEPLOYMENT, collection_id)

    lims = stack.lims
    (job,) = lims.jobs_for_collection(collection_id)
    assert job.automatic and job.triggered_by == f"automation:{event.event_id}"
    assert job.program_status == "success" and job.parameters["iterations"] == 60
    names = {Path(a).name for a in job.attachments}
    assert names == {
        "reconstruction.h5",
        "object_phase.png",
        "object_amplitude.png",
        "error.png",
        "summary.json",
    }
    (result,) = records.ptycho_results(lims, collection_id)
    assert result.algorithm == "epie" and result.iterations == 60 and result.n_positions == 100
    assert result.processing_job_id == job.processing_job_id
    assert phase_error(scan, result.reconstruction_file) <= MAX_PHASE_NRMSE
    saved = read_reconstruction(Path(result.reconstruction_file))
    assert is_decreasing(saved.errors) and result.final_error == pytest.approx(saved.errors[-1])

    artifacts(stack, [f"ptycho-dc{collection_id}-report", f"ptycho-dc{collection_id}-error"])


def test_rerun_with_rpie_and_the_earlier_probe_is_a_separate_job(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    scan = write_ptycho_scan(tmp_path / "data", n_positions=100, seed=4)
    announce(stack, demo_event(scan.scan_file, collection_id, {"iterations": 40}))
    completed_run(stack, DEPLOYMENT, collection_id)
    lims = stack.lims
    first_job = lims.jobs_for_collection(collection_id)[0]

    output = cli_rerun(
        stack,
        collection_id,
        "algorithm=rpie",
        "alpha=0.2",
        "iterations=10",
        f"probe_from={first_job.processing_job_id}",
    )
    assert DEPLOYMENT in output and "COMPLETED" in output
    jobs = lims.jobs_for_collection(collection_id)
    assert [j.automatic for j in jobs] == [True, False]
    assert jobs[1].triggered_by == f"cli:{getpass.getuser()}"
    first, second = records.ptycho_results(lims, collection_id)
    assert (first.algorithm, first.iterations) == ("epie", 40)
    assert (second.algorithm, second.iterations) == ("rpie", 10)
    assert Path(first.reconstruction_file).parent != Path(second.reconstruction_file).parent
    # Started from the first run's probe, the rerun's 10th iteration fits the data far
    # better than the first run's 10th (which started from a probe guess).
    first_errors = read_reconstruction(Path(first.reconstruction_file)).errors
    assert second.final_error is not None
    assert second.final_error < 0.5 * first_errors[9]


def flow_run_processes(stack: LocalStack, flow_run_id: str) -> list[int]:
    """Pids of the processes running one flow run.

    Prefect's own start (spawn) puts the run id in the process's environment; the warm
    runner of `prefect-beamline serve` forks runs from its forkserver, whose children
    inherit the server's environment, so there they are the forkserver's children (one
    flow run at a time in this test).
    """
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    parents: dict[int, int] = {}
    by_environment = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
            parents[int(entry.name)] = int(
                (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, ValueError, IndexError):
            continue
        if wanted in environment.split(b"\0"):
            by_environment.append(int(entry.name))
    if by_environment:
        return by_environment
    serve = stack.process("serve").process.pid
    forkservers = [
        pid
        for pid, parent in parents.items()
        if parent == serve and b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return [pid for pid, parent in parents.items() if parent in forkservers]


def test_killed_run_retried_resumes_from_its_checkpoint(stack: LocalStack, tmp_path: Path) -> None:
    """The flow-run process is SIGKILLed once a checkpoint exists: Prefect marks the run
    CRASHED, and crash recovery (prefect_beamline.recovery) starts the same flow run
    again: it gets the same job and results folder, and the reconstruction continues
    from the checkpoint."""
    collection_id = next_collection_id()
    scan = write_ptycho_scan(tmp_path / "data", n_positions=100, seed=5)
    parameters = {"iterations": 300, "iterations_per_checkpoint": 20}
    announce(stack, demo_event(scan.scan_file, collection_id, parameters))
    run = wait_for_new_flow_run(stack.api_url, DEPLOYMENT, collection_id, set(), RUN_TIMEOUT_S)

    checkpoints = scan.scan_file.parent / "processing" / "ptycho-reconstruction"  # the recipe
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not list(checkpoints.glob(f"dc{collection_id}-job*/checkpoint.h5")):
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.05)
    pids = flow_run_processes(stack, run.id)
    assert pids, "no process of the flow run found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    (checkpoint,) = checkpoints.glob(f"dc{collection_id}-job*/checkpoint.h5")
    killed_at = read_reconstruction(checkpoint).iteration  # before the retry writes again
    assert 20 <= killed_at < 300

    final = wait_for_state(stack.api_url, run.id, {"COMPLETED", "FAILED"}, RUN_TIMEOUT_S)
    assert final.state == "COMPLETED", stack.logs()
    history = httpx.get(
        f"{stack.api_url}/flow_run_states/", params={"flow_run_id": run.id}, timeout=10.0
    ).json()
    names = [(state["type"], state["name"], state["message"] or "") for state in history]
    assert any(kind == "CRASHED" for kind, _, _ in names), names
    assert any(name == "AwaitingRetry" and "crash recovery" in text for _, name, text in names)

    (job,) = stack.lims.jobs_for_collection(collection_id)  # the same job, not a second one
    assert job.program_status == "success"
    summary = json.loads((checkpoint.parent / "summary.json").read_text())
    assert summary["resumed_from_iteration"] >= killed_at
    assert summary["iterations"] == 300
    saved = read_reconstruction(Path(summary["reconstruction_file"]))
    assert len(saved.errors) == 300 and is_decreasing(saved.errors)
    assert phase_error(scan, summary["reconstruction_file"]) <= MAX_PHASE_NRMSE


def test_a_scan_without_positions_fails_naming_the_file_and_field(
    stack: LocalStack, tmp_path: Path
) -> None:
    import h5py

    collection_id = next_collection_id()
    scan = write_ptycho_scan(tmp_path / "data", n_positions=16, seed=6)
    with h5py.File(scan.scan_file, "a") as handle:
        del handle["/entry/data/x"]
    announce(stack, demo_event(scan.scan_file, collection_id, {}))
    assert final_run(stack, DEPLOYMENT, collection_id).state == "FAILED"
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert job.program_status == "failed"
    assert scan.scan_file.name in (job.program_message or "")
    assert "positions" in (job.program_message or "")
