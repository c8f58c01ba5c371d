"""One job per accepted event, durably, and zombie runs recovered: through a stack of our
own, since these tests restart the Prefect server and kill the runner.

Bounds (each test fails rather than hang): stack start ≤ 120 s; each run ≤ RUN_TIMEOUT_S
(180 s), which covers the zombie's detection: ≤ zombie window (60 s) after its last
heartbeat + 1 s proactive evaluation + 1 s recovery loop. Measured: docs/operations.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed, Failed, Running

from prefect_beamline.events import CollectionEvent
from prefect_beamline.flows.common import ALREADY_PROCESSED
from prefect_beamline.lims import Lims
from prefect_beamline.recovery import Served, recover_once
from prefect_beamline.runs import (
    TERMINAL_STATES,
    FlowRunInfo,
    deployment_id,
    read_flow_run,
    wait_for_new_flow_run,
    wait_for_state,
)
from prefect_beamline.stack import (
    LocalStack,
    cli,
    embedded_stack,
    served_deployment_names,
    start_prefect_server,
    start_process,
    wait_for_deployments,
)
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.helpers import RUN_TIMEOUT_S, announce, completed_run, next_collection_id
from tests.helpers import DC, collection_event
from tests.lims.helpers import new_job, start

pytestmark = pytest.mark.e2e
ROTATION = "mx-processing/mx-rotation"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack these tests may restart and kill parts of (not the session's)."""
    with embedded_stack(
        tmp_path_factory.mktemp("once"), data_roots=[tmp_path_factory.getbasetemp()]
    ) as running:
        yield running


def announce_rotation(
    stack: LocalStack, data: Path, n_images: int = 4, **parameters: object
) -> tuple[int, CollectionEvent]:
    """A new MX rotation collection written to `data` and announced `finished`."""
    collection_id = next_collection_id()
    synthetic = write_mx_collection(data, n_images=n_images, seed=collection_id)
    event = demo_event(synthetic.master_file, collection_id, None)
    return collection_id, announce(stack, event, **{"images_per_chunk": 4, **parameters})


def flow_run(stack: LocalStack, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10.0)
    response.raise_for_status()
    return dict(response.json())


def final_runs(stack: LocalStack, collection_id: int, count: int) -> list[FlowRunInfo]:
    """The collection's first `count` rotation runs, once each has ended."""
    known: set[str] = set()
    for _ in range(count):
        known.add(wait_for_new_flow_run(stack.api_url, ROTATION, collection_id, known, 60).id)
    return [wait_for_state(stack.api_url, r, TERMINAL_STATES, RUN_TIMEOUT_S) for r in known]


def results_folders(stack: LocalStack, collection_id: int) -> list[Path]:
    """Job folders the collection's jobs left beside the data (one per job)."""
    jobs = stack.lims.jobs_for_collection(collection_id)
    data_folder = Path(jobs[0].attachments[0]).parents[2]
    return sorted(data_folder.glob(f"mx-rotation/dc{collection_id}-job*"))


def assert_one_job_and_one_skipped_run(
    stack: LocalStack, collection_id: int, runs: list[FlowRunInfo]
) -> None:
    jobs = stack.lims.jobs_for_collection(collection_id)
    assert len(jobs) == 1, (jobs, stack.logs())
    assert jobs[0].program_status == "success"
    assert len(results_folders(stack, collection_id)) == 1
    assert all(run.state == "COMPLETED" for run in runs), stack.logs()
    skipped = [flow_run(stack, run.id)["state"] for run in runs if run.id != jobs[0].run_key]
    assert [state["name"] for state in skipped] == [ALREADY_PROCESSED] * (len(runs) - 1)
    assert all(f"job {jobs[0].processing_job_id}" in state["message"] for state in skipped)


def test_two_automations_racing_on_one_event_make_one_job(
    own_stack: LocalStack, tmp_path: Path
) -> None:
    """A stale copy of the rotation automation (as a deleted-and-recreated deployment
    leaves behind) fires with the real one: two runs at once, one job."""
    owner = f"prefect.deployment.{deployment_id(own_stack.api_url, ROTATION)}"
    automation = httpx.get(f"{own_stack.api_url}/automations/related-to/{owner}").json()[0]
    copy = {k: v for k, v in automation.items() if k not in {"id", "created", "updated"}}
    copy["name"] += " (stale copy)"
    created = httpx.post(f"{own_stack.api_url}/automations/", json=copy, timeout=10.0)
    created.raise_for_status()
    try:
        collection_id, _ = announce_rotation(own_stack, tmp_path / "data")
        runs = final_runs(own_stack, collection_id, 2)
    finally:
        httpx.delete(f"{own_stack.api_url}/automations/{created.json()['id']}", timeout=10.0)
    assert_one_job_and_one_skipped_run(own_stack, collection_id, runs)


def restart_server(stack: LocalStack) -> None:
    """Stop the Prefect server and start a new one on the same database and port; its
    in-memory event dedupe starts empty."""
    old = stack.process("prefect-server")
    old.stop()
    port = int(stack.api_url.rsplit(":", 1)[1].split("/")[0])
    new = start_prefect_server(stack.workdir, stack.env, port)
    stack.processes[stack.processes.index(old)] = new


def test_requeue_after_a_server_restart_makes_no_second_job(
    own_stack: LocalStack, tmp_path: Path
) -> None:
    collection_id, event = announce_rotation(own_stack, tmp_path / "data")
    first = completed_run(own_stack, ROTATION, collection_id)
    restart_server(own_stack)
    requeue = subprocess.run(
        cli("outbox", "requeue", "--event-id", event.event_id),
        env=own_stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert requeue.returncode == 0 and "requeued 1" in requeue.stdout, requeue.stderr
    second = wait_for_new_flow_run(own_stack.api_url, ROTATION, collection_id, {first}, 120)
    final = wait_for_state(own_stack.api_url, second.id, TERMINAL_STATES, RUN_TIMEOUT_S)
    runs = [wait_for_state(own_stack.api_url, first, TERMINAL_STATES, 10), final]
    assert_one_job_and_one_skipped_run(own_stack, collection_id, runs)


def chunk_runs(stack: LocalStack, run_id: str, state_names: list[str]) -> int:
    """The run's spot-finding chunk task runs (in the run itself: no subflow) in these
    states."""
    body = {
        "flow_runs": {"id": {"any_": [run_id]}},
        "task_runs": {
            "name": {"like_": "find-spots-"},
            "state": {"name": {"any_": state_names}},
        },
    }
    response = httpx.post(f"{stack.api_url}/task_runs/filter", json=body, timeout=10.0)
    response.raise_for_status()
    return len(response.json())


def kill_runner(stack: LocalStack) -> None:
    """`kill -9` of `serve` and everything it started (forkserver, flow-run processes)."""
    serve = stack.process("serve")
    os.killpg(serve.process.pid, signal.SIGKILL)
    serve.process.wait(timeout=30)
    stack.processes.remove(serve)


def restart_runner(stack: LocalStack) -> None:
    runner = start_process("serve", cli("serve"), stack.env, stack.workdir / "logs" / "restarted")
    stack.processes.append(runner)
    wait_for_deployments(stack.api_url, served_deployment_names(), runner)


def state_history(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.api_url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10.0
    )
    response.raise_for_status()
    return sorted(response.json(), key=lambda state: state["timestamp"])


def print_recovery_timings(killed_at: datetime, states: list[dict[str, Any]]) -> None:
    """Seconds from the kill to Crashed, AwaitingRetry and Completed (`pytest -s`)."""
    timings = {}
    for name in ("Crashed", "AwaitingRetry", "Completed"):
        moment = next(state["timestamp"] for state in states if state["name"] == name)
        timings[name] = round((datetime.fromisoformat(moment) - killed_at).total_seconds(), 1)
    print(f"\nseconds after kill -9: {timings}")


def test_killed_runner_zombie_is_crashed_by_heartbeat_loss_and_resumed(
    own_stack: LocalStack, tmp_path: Path
) -> None:
    """`kill -9` of the runner mid-run; a new runner: the run is found dead (no
    heartbeat for the zombie window), started again as the same flow run, reuses the
    finished chunks and closes its one LIMS job as a success."""
    collection_id, _ = announce_rotation(own_stack, tmp_path / "data", 80, images_per_chunk=1)
    run = wait_for_new_flow_run(own_stack.api_url, ROTATION, collection_id, set(), 120)
    deadline = time.monotonic() + 120
    while chunk_runs(own_stack, run.id, ["Completed"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_runner(own_stack)
    killed_at = datetime.now(UTC)
    finished_before_kill = chunk_runs(own_stack, run.id, ["Completed"])
    assert 0 < finished_before_kill < 80, "the run must be killed mid-way"
    assert read_flow_run(own_stack.api_url, run.id).state == "RUNNING"  # a zombie now

    restart_runner(own_stack)
    final = wait_for_state(own_stack.api_url, run.id, {"COMPLETED", "FAILED"}, RUN_TIMEOUT_S)
    assert final.state == "COMPLETED", own_stack.logs()

    states = state_history(own_stack, run.id)
    print_recovery_timings(killed_at, states)
    history = [(state["type"], state["name"], state["message"]) for state in states]
    crashed = [message for kind, _, message in history if kind == "CRASHED"]
    window = own_stack.env["PREFECT_BEAMLINE_ZOMBIE_AFTER_SECONDS"]
    assert len(crashed) == 1 and f"No heartbeat for {window} s" in crashed[0], history
    assert any(
        name == "AwaitingRetry" and "crash recovery" in message for _, name, message in history
    )
    jobs = own_stack.lims.jobs_for_collection(collection_id)
    assert len(jobs) == 1 and jobs[0].run_key == run.id
    assert jobs[0].program_status == "success"
    assert chunk_runs(own_stack, run.id, ["Cached"]) >= finished_before_kill


def test_open_jobs_of_runs_that_ended_badly_are_marked_failed_with_the_reason(
    own_stack: LocalStack, tmp_path: Path
) -> None:
    """Who closes a job whose runner died for good: the recovery pass, from the flow
    run's state (a LIMS of its own here, so serve's loop does not race the test)."""
    lims = Lims(f"sqlite:///{tmp_path / 'lims.db'}")
    lims.create_schema()
    lims.record_data_collection(collection_event())
    with (
        temporary_settings({PREFECT_API_URL: own_stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        abandoned: Flow[..., None] = Flow(lambda: None, name="abandoned")

        def job_of_run_in(state: State[Any]) -> int:
            run = client.create_flow_run(abandoned, state=state)
            return start(lims, new_job(lims, str(run.id), record=False))

        failed = job_of_run_in(Failed(message="disk full"))
        crashed = job_of_run_in(Crashed(message="No heartbeat for 60 s"))
        running = job_of_run_in(Running())
        gone = start(lims, new_job(lims, str(uuid.uuid4()), record=False))
        retried, closed = recover_once(client, lims, Served(["abandoned"], ["mx-rotation"]), 0)
    assert retried == 0  # runs without a deployment of ours are not retried
    assert sorted(closed) == sorted([failed, crashed, gone])
    jobs = {job.processing_job_id: job for job in lims.jobs_for_collection(DC)}
    assert jobs[running].program_status == "running"
    assert "ended Failed: disk full" in (jobs[failed].program_message or "")
    assert "after 0 crash-recovery retries" in (jobs[crashed].program_message or "")
    assert "no longer exists" in (jobs[gone].program_message or "")
