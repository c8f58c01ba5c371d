"""The whole facility path through real parts: HTTP webhook -> gateway -> Prefect event ->
automation -> served deployment -> completed flow -> LIMS rows, result files, artifacts.

One embedded stack (Prefect server on SQLite, `prefect-beamline serve`, gateway) is shared
by the end-to-end tests of every technique (the `stack` fixture of conftest.py); each
test uses its own collection id.
"""

from __future__ import annotations

import getpass
import itertools
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.lims import Lims
from prefect_beamline.runs import (
    TERMINAL_STATES,
    wait_for_new_flow_run,
    wait_for_state,
)
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
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.compute import stack_computes_on

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 180.0
_collection_ids = itertools.count(1001)
REPOSITORY = Path(__file__).resolve().parents[2]


def announce(
    gateway_url: str,
    token: str,
    master: Path,
    collection_id: int,
    grid: GridScan | None = None,
    **processing_parameters: object,
) -> CollectionEvent:
    """POST the DAQ's `finished` event; processing in chunks of 4 unless told otherwise."""
    event = CollectionEvent(
        event_id=f"test-{uuid.uuid4()}",
        kind=CollectionEventKind.finished,
        technique="mx",
        experiment_type="gridscan" if grid else "rotation",
        beamline="i03",
        visit="mx12345-1",
        collection_id=collection_id,
        data_files=[str(master)],
        grid=grid,
        processing_parameters={"images_per_chunk": 4, **processing_parameters},
    )
    response = httpx.post(
        f"{gateway_url}/api/v1/collections",
        content=event.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10.0,
    )
    assert response.status_code == 202, response.text
    return event


def run_to_completion(
    stack: LocalStack, deployment: str, collection_id: int, known: set[str]
) -> str:
    run = wait_for_new_flow_run(stack.api_url, deployment, collection_id, known, RUN_TIMEOUT_S)
    final = wait_for_state(stack.api_url, run.id, TERMINAL_STATES, RUN_TIMEOUT_S)
    assert final.state == "COMPLETED", stack.logs()
    return final.id


def prefect_events(stack: LocalStack, name: str, resource_id: str) -> list[dict]:
    """Events Prefect has stored (its persister writes in batches: poll a while)."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource_id]}}, "limit": 50}
    deadline = time.monotonic() + 30.0
    while True:
        response = httpx.post(f"{stack.api_url}/events/filter", json=body, timeout=10.0)
        response.raise_for_status()
        events = list(response.json()["events"])
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_webhook_runs_mx_rotation_to_lims_files_and_artifacts(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next(_collection_ids)
    synthetic = write_mx_collection(tmp_path / "data", n_images=8, seed=3)
    event = announce(stack.gateway_url, stack.gateway_token, synthetic.master_file, collection_id)

    flow_run_id = run_to_completion(stack, "mx-processing/mx-rotation", collection_id, set())

    lims = Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"])
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

    wanted = [f"mx-dc{collection_id}-per-image", f"mx-dc{collection_id}-report"]
    artifacts = httpx.post(
        f"{stack.api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": wanted}}},
        timeout=10.0,
    ).json()
    assert {a["key"] for a in artifacts} == set(wanted)
    assert all(a["flow_run_id"] for a in artifacts)
    completed = prefect_events(
        stack, "beamline.processing.completed", f"beamline.collection.{collection_id}"
    )
    assert completed and completed[0]["payload"]["summary"]["n_images"] == 8
    assert any(flow_run_id in json.dumps(e["related"]) for e in completed)


def test_duplicate_webhook_runs_the_collection_once(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next(_collection_ids)
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=5)
    event = announce(stack.gateway_url, stack.gateway_token, synthetic.master_file, collection_id)
    again = httpx.post(
        f"{stack.gateway_url}/api/v1/collections",
        content=event.model_dump_json(),
        headers={
            "Authorization": f"Bearer {stack.gateway_token}",
            "Content-Type": "application/json",
        },
        timeout=10.0,
    )
    assert again.json()["status"] == "duplicate"
    run_to_completion(stack, "mx-processing/mx-rotation", collection_id, set())
    with pytest.raises(TimeoutError):
        wait_for_new_flow_run(
            stack.api_url,
            "mx-processing/mx-rotation",
            collection_id,
            {r for r in _run_ids(stack, collection_id)},
            timeout_s=5.0,
        )


def _run_ids(stack: LocalStack, collection_id: int) -> set[str]:
    from prefect_beamline.runs import flow_runs_for_collection

    return {
        r.id
        for r in flow_runs_for_collection(stack.api_url, "mx-processing/mx-rotation", collection_id)
    }


def test_manual_rerun_is_a_new_job_recorded_as_manual(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next(_collection_ids)
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=11)
    announce(stack.gateway_url, stack.gateway_token, synthetic.master_file, collection_id)
    run_to_completion(stack, "mx-processing/mx-rotation", collection_id, set())

    # What an engineer types; the deployment is found from the collection in the LIMS.
    done = subprocess.run(
        cli("rerun", str(collection_id), "--set", "sigma_strong=4.5", "--wait", "--timeout", "180"),
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    assert "mx-processing/mx-rotation" in done.stdout and "COMPLETED" in done.stdout
    lims = Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"])
    jobs = lims.jobs_for_collection(collection_id)
    assert [j.automatic for j in jobs] == [True, False]
    assert jobs[1].triggered_by == f"cli:{getpass.getuser()}"
    assert jobs[1].parameters["sigma_strong"] == 4.5
    assert jobs[0].parameters["sigma_strong"] == 3.0
    assert len(records.image_quality(lims, jobs[1].program_id or -1)) == 4
    assert Path(jobs[0].attachments[0]).parent != Path(jobs[1].attachments[0]).parent


def test_grid_scan_finds_the_crystal(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next(_collection_ids)
    grid = GridScan(steps_x=6, steps_y=5, dx_um=20, dy_um=20, snaked=True)
    synthetic = write_mx_collection(tmp_path / "data", name="grid_1", grid=grid, seed=2)
    announce(stack.gateway_url, stack.gateway_token, synthetic.master_file, collection_id, grid)
    run_to_completion(stack, "mx-processing/mx-gridscan", collection_id, set())

    lims = Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"])
    job = lims.jobs_for_collection(collection_id)[0]
    summary = json.loads((Path(job.attachments[0]).parent / "summary.json").read_text())
    true_x, true_y = synthetic.grid_centre_true or (0.0, 0.0)
    assert abs(summary["grid_centre"]["x"] - true_x) < 0.75
    assert abs(summary["grid_centre"]["y"] - true_y) < 0.75
    assert records.grid_result(lims, job.program_id or -1) is not None


def test_corrupt_data_file_fails_the_run_naming_the_file(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next(_collection_ids)
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=13)
    broken = synthetic.data_files[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    announce(stack.gateway_url, stack.gateway_token, synthetic.master_file, collection_id)
    run = wait_for_new_flow_run(
        stack.api_url, "mx-processing/mx-rotation", collection_id, set(), RUN_TIMEOUT_S
    )
    final = wait_for_state(stack.api_url, run.id, TERMINAL_STATES, RUN_TIMEOUT_S)
    assert final.state == "FAILED"
    job = Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"]).jobs_for_collection(collection_id)[0]
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
        prefect_cli(env, "work-pool", "create", "beamline-process", "--type", "process")
        prefect_cli(env, "--no-prompt", "deploy", "--all")
        server.stop()

        gateway = start_process("gateway", cli("gateway", "--port", str(gateway_port)), env, logs)
        processes.append(gateway)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_for_http(f"{gateway_url}/health", 60, gateway.process)
        collection_id = next(_collection_ids)
        synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=17)
        announce(gateway_url, "secret-token", synthetic.master_file, collection_id)
        pending = httpx.get(
            f"{gateway_url}/api/v1/outbox",
            params={"status": "pending"},
            headers={"Authorization": "Bearer secret-token"},
            timeout=10.0,
        ).json()
        assert len(pending) == 1

        processes.append(start_prefect_server(tmp_path, env, server_port))
        worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "beamline-process"]
        processes.append(start_process("worker", worker, env, logs))
        run = wait_for_new_flow_run(
            api_url, "mx-processing/mx-rotation", collection_id, set(), RUN_TIMEOUT_S
        )
        final = wait_for_state(api_url, run.id, TERMINAL_STATES, RUN_TIMEOUT_S)
        assert final.state == "COMPLETED", "\n".join(p.log_tail() for p in processes)
        jobs = Lims(env["PREFECT_BEAMLINE_LIMS_URL"]).jobs_for_collection(collection_id)
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
        collection_id = next(_collection_ids)
        synthetic = write_mx_collection(tmp_path / "data", n_images=6, seed=23)
        announce(
            stack.gateway_url,
            stack.gateway_token,
            synthetic.master_file,
            collection_id,
            images_per_chunk=2,
        )
        run_to_completion(stack, "mx-processing/mx-rotation", collection_id, set())
        assert cluster.scheduler is not None
        assert cluster.scheduler.transition_counter > 0  # the scheduler really ran tasks
    lims = Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"])
    job = lims.jobs_for_collection(collection_id)[0]
    assert len(records.image_quality(lims, job.program_id or -1)) == 6
    assert "dask_scheduler" not in job.parameters  # the job's parameters are science only
