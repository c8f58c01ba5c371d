"""The whole facility path through real parts: HTTP webhook -> gateway -> Prefect event ->
automation -> served deployment -> completed flow -> LIMS rows, result files, artifacts.

One embedded stack (Prefect server on SQLite, `prefect-beamline serve`, gateway) is shared
by the end-to-end tests of every technique (the `stack` fixture of conftest.py); each
test uses its own collection id.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.demo import post_event
from prefect_beamline.events import CollectionEvent, GridScan
from prefect_beamline.runs import flow_runs_for_collection, wait_for_new_flow_run
from prefect_beamline.stack import (
    LocalStack,
    cli,
    free_port,
    stack_environment,
    start_prefect_server,
    start_process,
    wait_for_http,
)
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.compute import stack_computes_on
from tests.e2e.helpers import (
    announce,
    artifacts,
    cli_rerun,
    completed_events,
    completed_run,
    final_run,
    next_collection_id,
)

pytestmark = pytest.mark.e2e
ROTATION = "mx-processing/mx-rotation"
REPOSITORY = Path(__file__).resolve().parents[2]


def announce_mx(
    stack: LocalStack,
    master: Path,
    collection_id: int,
    grid: GridScan | None = None,
    **processing_parameters: object,
) -> CollectionEvent:
    """POST the DAQ's `finished` event; processing in chunks of 4 unless told otherwise."""
    chunks: dict[str, object] = {"images_per_chunk": 4, **processing_parameters}
    return announce(stack, demo_event(master, collection_id, grid), **chunks)


def test_webhook_runs_mx_rotation_to_lims_files_and_artifacts(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=8, seed=3)
    event = announce_mx(stack, synthetic.master_file, collection_id)

    flow_run_id = completed_run(stack, ROTATION, collection_id)

    lims = stack.lims
    jobs = lims.jobs_for_collection(collection_id)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.automatic is True
    assert job.triggered_by == f"automation:{event.event_id}"
    assert job.program_status == "success"
    assert len(records.image_quality(lims, job.program_id or -1)) == 8
    assert job.parameters["images_per_chunk"] == 4  # the DAQ's override reached the flow
    results_dir = Path(job.attachments[0]).parent
    assert {"per_image.csv", "summary.json", "spots_per_image.png"} <= {
        p.name for p in results_dir.iterdir()
    }
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["n_images"] == 8
    assert summary["n_spots_total"] > 8 * 20  # the synthetic images hold ~40 spots each

    stored = artifacts(stack, [f"mx-dc{collection_id}-per-image", f"mx-dc{collection_id}-report"])
    assert all(a["flow_run_id"] for a in stored)
    completed = completed_events(stack, collection_id)
    assert completed and completed[0]["payload"]["summary"]["n_images"] == 8
    assert any(flow_run_id in json.dumps(e["related"]) for e in completed)


def test_duplicate_webhook_runs_the_collection_once(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=5)
    event = announce_mx(stack, synthetic.master_file, collection_id)
    # The gateway answers 200 `duplicate`, not 202: post_event refuses it, showing the body.
    with pytest.raises(RuntimeError, match=r'gateway answered 200: .*"status":\s*"duplicate"'):
        post_event(stack, event)
    completed_run(stack, ROTATION, collection_id)
    known = {r.id for r in flow_runs_for_collection(stack.api_url, ROTATION, collection_id)}
    with pytest.raises(TimeoutError):
        wait_for_new_flow_run(stack.api_url, ROTATION, collection_id, known, timeout_s=5.0)


def test_manual_rerun_is_a_new_job_recorded_as_manual(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=11)
    announce_mx(stack, synthetic.master_file, collection_id)
    completed_run(stack, ROTATION, collection_id)

    # What an engineer types; the deployment is found from the collection in the LIMS.
    output = cli_rerun(stack, collection_id, "sigma_strong=4.5")
    assert ROTATION in output and "COMPLETED" in output
    lims = stack.lims
    jobs = lims.jobs_for_collection(collection_id)
    assert [j.automatic for j in jobs] == [True, False]
    assert jobs[1].triggered_by == f"cli:{getpass.getuser()}"
    assert jobs[1].parameters["sigma_strong"] == 4.5
    assert jobs[0].parameters["sigma_strong"] == 3.0
    assert len(records.image_quality(lims, jobs[1].program_id or -1)) == 4
    assert Path(jobs[0].attachments[0]).parent != Path(jobs[1].attachments[0]).parent


def test_grid_scan_finds_the_crystal(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next_collection_id()
    grid = GridScan(steps_x=6, steps_y=5, dx_um=20, dy_um=20, snaked=True)
    synthetic = write_mx_collection(tmp_path / "data", name="grid_1", grid=grid, seed=2)
    announce_mx(stack, synthetic.master_file, collection_id, grid)
    completed_run(stack, "mx-processing/mx-gridscan", collection_id)

    lims = stack.lims
    job = lims.jobs_for_collection(collection_id)[0]
    summary = json.loads((Path(job.attachments[0]).parent / "summary.json").read_text())
    true_x, true_y = synthetic.grid_centre_true or (0.0, 0.0)
    assert abs(summary["grid_centre"]["x"] - true_x) < 0.75
    assert abs(summary["grid_centre"]["y"] - true_y) < 0.75
    assert records.grid_result(lims, job.program_id or -1) is not None


def test_corrupt_data_file_fails_the_run_naming_the_file(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=13)
    broken = synthetic.data_files[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    announce_mx(stack, synthetic.master_file, collection_id)
    assert final_run(stack, ROTATION, collection_id).state == "FAILED"
    job = stack.lims.jobs_for_collection(collection_id)[0]
    assert job.program_status == "failed"
    assert broken.name in (job.program_message or "")


def prefect_cli(env: dict[str, str], *args: str) -> None:
    """Run the `prefect` CLI from the repository (where prefect.yaml is), failing loudly."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def test_event_accepted_while_prefect_is_down_is_processed_when_it_returns(
    tmp_path: Path,
) -> None:
    """Prefect (server and runner) is down when the webhook arrives: the gateway still
    answers 202, keeps the event, and emits it once the server is back."""
    server_port, gateway_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    env = stack_environment(tmp_path, api_url, "secret-token", gateway_port)
    Path(env["PREFECT_BEAMLINE_HOME"]).mkdir(parents=True)
    logs = tmp_path / "logs"
    processes = []
    try:
        # A facility's server already knows the deployments (`prefect deploy --all` on a
        # process work pool) and their triggers; then it goes down.
        server = start_prefect_server(tmp_path, env, server_port)
        prefect_cli(env, "work-pool", "create", "beamline", "--type", "beamline")
        prefect_cli(env, "--no-prompt", "deploy", "--all")
        server.stop()

        gateway = start_process("gateway", cli("gateway", "--port", str(gateway_port)), env, logs)
        processes.append(gateway)
        # Handles on the facility's processes (the list grows), as the helpers take them.
        facility = LocalStack(
            tmp_path, api_url, f"http://127.0.0.1:{gateway_port}", "secret-token", env, processes
        )
        wait_for_http(f"{facility.gateway_url}/health", 60, gateway.process)
        collection_id = next_collection_id()
        synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=17)
        announce_mx(facility, synthetic.master_file, collection_id)
        pending = httpx.get(
            f"{facility.gateway_url}/api/v1/outbox",
            params={"status": "pending"},
            headers={"Authorization": f"Bearer {facility.operator_token}"},
            timeout=10.0,
        ).json()
        assert len(pending) == 1

        processes.append(start_prefect_server(tmp_path, env, server_port))
        worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "beamline"]
        worker += ["--type", "beamline"]  # Prefect finds our worker type by its entry point
        processes.append(start_process("worker", worker, env, logs))
        completed_run(facility, ROTATION, collection_id)
        jobs = facility.lims.jobs_for_collection(collection_id)
        assert len(jobs) == 1 and jobs[0].automatic
    finally:
        for process in reversed(processes):
            process.stop()


def test_chunks_run_on_the_dask_cluster_the_compute_block_names(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The server's Compute block, not the DAQ, sends the chunks to a Dask scheduler."""
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        stack_computes_on(stack, Compute(scheduler_address=cluster.scheduler_address)),
    ):
        collection_id = next_collection_id()
        synthetic = write_mx_collection(tmp_path / "data", n_images=6, seed=23)
        announce_mx(stack, synthetic.master_file, collection_id, images_per_chunk=2)
        completed_run(stack, ROTATION, collection_id)
        assert cluster.scheduler is not None
        assert cluster.scheduler.transition_counter > 0  # the scheduler really ran tasks
    lims = stack.lims
    job = lims.jobs_for_collection(collection_id)[0]
    assert len(records.image_quality(lims, job.program_id or -1)) == 6
    assert "dask_scheduler" not in job.parameters  # the job's parameters are science only
