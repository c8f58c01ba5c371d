"""The `beamline` worker type: deployments on a work pool of that type, run by
`prefect-beamline worker` started from a folder that is not the checkout.

One Prefect server (SQLite) and gateway for this module; `prefect deploy --all` registers
prefect.yaml's deployments on the pool "beamline", and a probe deployment (a flow module
outside the package, on the worker's PYTHONPATH) reports how its process was started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_beamline.runs import TERMINAL_STATES, read_flow_run, wait_for_state
from prefect_beamline.stack import (
    LocalStack,
    ManagedProcess,
    cli,
    embedded_stack,
    free_port,
    start_process,
)
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.helpers import completed_run, next_collection_id
from tests.e2e.test_mx import ROTATION, announce_mx, prefect_cli
from tests.e2e.test_observe import announce_traced, eventually, sample, scrape, spans_of_trace

pytestmark = pytest.mark.e2e
POOL = "beamline"
PROBE_MODULE = "beamline_probe_flows"
PROBE_SOURCE = """
import json, os, sys, time
from pathlib import Path
from prefect import flow

IMPORTED_IN = os.getpid()  # the forkserver's pid when it preloaded this module


@flow
def report_process(report_file: str, hold_seconds: float = 0.0) -> None:
    facts = {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "module_imported_in": IMPORTED_IN,
        "h5py_loaded": "h5py" in sys.modules,  # preloaded; neither Prefect nor we import it
    }
    Path(report_file).write_text(json.dumps(facts))
    time.sleep(hold_seconds)
"""


@dataclass
class WorkerStack:
    stack: LocalStack
    worker: ManagedProcess
    probe_deployment_id: str
    folder: Path
    worker_env: dict[str, str]


def create_probe_deployment(api_url: str) -> str:
    """A deployment of `beamline_probe_flows:report_process` on the beamline pool."""
    flow = httpx.post(f"{api_url}/flows/", json={"name": "report-process"}, timeout=10.0)
    flow.raise_for_status()
    deployment = httpx.post(
        f"{api_url}/deployments/",
        json={
            "name": "probe",
            "flow_id": flow.json()["id"],
            "entrypoint": f"{PROBE_MODULE}:report_process",
            "work_pool_name": POOL,
        },
        timeout=10.0,
    )
    deployment.raise_for_status()
    return str(deployment.json()["id"])


def start_probe_run(api_url: str, deployment_id: str, **parameters: Any) -> str:
    response = httpx.post(
        f"{api_url}/deployments/{deployment_id}/create_flow_run",
        json={"parameters": parameters},
        timeout=10.0,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def wait_for_file(path: Path, worker: ManagedProcess, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return dict(json.loads(path.read_text()))
        time.sleep(0.1)
    raise TimeoutError(f"{path} not written:\n{worker.log_tail()}")


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    folder = tmp_path_factory.mktemp("beamline-worker")
    with embedded_stack(
        folder / "stack", serve=False, data_roots=[tmp_path_factory.getbasetemp()]
    ) as stack:
        prefect_cli(stack.env, "work-pool", "create", POOL, "--type", "beamline")
        prefect_cli(stack.env, "--no-prompt", "deploy", "--all")
        probe = create_probe_deployment(stack.api_url)
        workdir = folder / "elsewhere"  # not the checkout: the package alone must suffice
        workdir.mkdir()
        (workdir / f"{PROBE_MODULE}.py").write_text(textwrap.dedent(PROBE_SOURCE))
        env = {
            **stack.env,
            "PYTHONPATH": str(workdir),
            "PREFECT_BEAMLINE_METRICS_PORT": str(free_port()),
            "PREFECT_BEAMLINE_TRACE_FILE": str(folder / "traces.jsonl"),
        }
        worker = start_process(
            "worker", cli("worker", "--pool", POOL), env, folder / "logs", cwd=workdir
        )
        stack.processes.append(worker)  # stopped with the stack
        yield WorkerStack(stack, worker, probe, workdir, env)


def test_webhook_runs_mx_on_the_beamline_worker_to_completed(
    worker_stack: WorkerStack, tmp_path: Path
) -> None:
    stack = worker_stack.stack
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=31)
    announce_mx(stack, synthetic.master_file, collection_id)
    run_id = completed_run(stack, ROTATION, collection_id)
    run = httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10.0).json()
    assert run["work_pool_name"] == POOL
    assert "submitting flow run" in worker_stack.worker.log_file.read_text()
    assert len(stack.lims.jobs_for_collection(collection_id)) == 1


def test_run_process_is_forked_from_the_preloaded_forkserver(worker_stack: WorkerStack) -> None:
    """The run's parent is the forkserver, not the worker, and the flow module (and h5py)
    were imported there before the fork."""
    report = worker_stack.folder / "forked.json"
    api_url = worker_stack.stack.api_url
    run_id = start_probe_run(api_url, worker_stack.probe_deployment_id, report_file=str(report))
    facts = wait_for_file(report, worker_stack.worker)
    assert wait_for_state(api_url, run_id, TERMINAL_STATES, 120).state == "COMPLETED"
    worker_pid = worker_stack.worker.process.pid
    assert facts["parent"] != worker_pid
    assert facts["module_imported_in"] == facts["parent"] != facts["pid"]
    assert facts["h5py_loaded"]


def test_killed_run_process_is_crashed(worker_stack: WorkerStack) -> None:
    report = worker_stack.folder / "killed.json"
    api_url = worker_stack.stack.api_url
    run_id = start_probe_run(
        api_url, worker_stack.probe_deployment_id, report_file=str(report), hold_seconds=300
    )
    facts = wait_for_file(report, worker_stack.worker)
    assert read_flow_run(api_url, run_id).state == "RUNNING"
    os.kill(facts["pid"], signal.SIGKILL)
    final = wait_for_state(api_url, run_id, TERMINAL_STATES, 120)
    assert final.state == "CRASHED", worker_stack.worker.log_tail()


def test_worker_runs_join_the_daq_trace_and_show_in_its_metrics(
    worker_stack: WorkerStack, tmp_path: Path
) -> None:
    """The worker copies the announced traceparent onto the run (as `serve` does), so the
    flow's span is in the DAQ's trace; its metrics endpoint counts the completed run."""
    stack, env = worker_stack.stack, worker_stack.worker_env
    metrics_url = f"http://127.0.0.1:{env['PREFECT_BEAMLINE_METRICS_PORT']}/metrics"
    completed = ("beamline_flow_runs_total", {"flow": "mx-processing", "state": "completed"})
    before = sample(scrape(metrics_url), completed[0], **completed[1])
    trace_id = secrets.token_hex(16)
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=33)
    announce_traced(
        stack, synthetic.master_file, collection_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"
    )
    completed_run(stack, ROTATION, collection_id)

    def flow_spans() -> list[dict[str, Any]] | None:
        spans = spans_of_trace(Path(env["PREFECT_BEAMLINE_TRACE_FILE"]), trace_id)
        return [s for s in spans if s["attributes"].get("prefect.run.type") == "flow"] or None

    assert eventually(flow_spans, "the worker's flow span in the DAQ's trace")
    eventually(
        lambda: sample(scrape(metrics_url), completed[0], **completed[1]) > before,
        "the completed run in the worker's metrics",
    )
