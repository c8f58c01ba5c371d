"""prefect.yaml deployed to a work pool as a facility does it, on a server of its own.

`prefect deploy --all` registers the deployments from some folder; the worker runs on
another machine where that folder does not exist. Here: deploy from a temporary folder,
delete it, start Prefect's stock process worker in another folder; a webhook's run must
reach the flow and complete. On the same server, the demo must leave the facility's
deployments and automations alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefect_beamline.deployments import find_prefect_yaml
from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack, cli, embedded_stack, start_process
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.helpers import announce, next_collection_id

pytestmark = pytest.mark.e2e
POOL = "beamline"  # the work pool prefect.yaml's deployments name
RUN_TIMEOUT_S = 240.0


def prefect(stack: LocalStack, *args: str, cwd: Path) -> str:
    """`prefect <args>` against the stack's server; it must succeed. Its output."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        env=stack.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def deployed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A server and gateway (no `serve`) with prefect.yaml deployed from a folder that
    no longer exists, and a stock process worker started in another folder."""
    workdir = tmp_path_factory.mktemp("worker-stack")
    with embedded_stack(workdir, serve=False, data_roots=[tmp_path_factory.getbasetemp()]) as stack:
        prefect(stack, "work-pool", "create", POOL, "--type", "process", cwd=workdir)
        deploy_folder = workdir / "deployed-from"
        deploy_folder.mkdir()
        shutil.copy(find_prefect_yaml(), deploy_folder / "prefect.yaml")
        prefect(stack, "deploy", "--all", cwd=deploy_folder)
        shutil.rmtree(deploy_folder)

        worker_folder = workdir / "worker"
        worker_folder.mkdir()
        worker = start_process(
            "worker",
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
            stack.env,
            workdir / "logs",
            cwd=worker_folder,
        )
        stack.processes.append(worker)
        yield stack


def test_a_worker_without_the_deploy_folder_runs_the_deployment(
    deployed_stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=3)
    announce(deployed_stack, demo_event(synthetic.master_file, collection_id, None))

    run = wait_for_new_flow_run(
        deployed_stack.api_url, "mx-processing/mx-rotation", collection_id, set(), RUN_TIMEOUT_S
    )
    final = wait_for_state(deployed_stack.api_url, run.id, TERMINAL_STATES, RUN_TIMEOUT_S)
    assert final.state == "COMPLETED", deployed_stack.logs()
    jobs = deployed_stack.lims.jobs_for_collection(collection_id)
    assert [job.program_status for job in jobs] == ["success"]
    assert jobs[0].automatic


# What a facility set up and the demo must not change (the workers' polling updates the
# deployments' status and last-polled time meanwhile).
CONFIGURATION = {
    "deployments": (
        "id", "name", "work_pool_name", "work_queue_name", "parameters", "entrypoint",
        "pull_steps", "paused", "concurrency_limit", "job_variables",
    ),
    "automations": ("id", "name", "enabled", "trigger", "actions"),
}  # fmt: skip


def server_configuration(api_url: str) -> dict[str, list[dict[str, object]]]:
    """Every deployment's and automation's configuration on the server."""
    return {
        kind: sorted(
            (
                {field: item.get(field) for field in fields}
                for item in httpx.post(f"{api_url}/{kind}/filter", json={}, timeout=10.0).json()
            ),
            key=lambda item: str(item["id"]),
        )
        for kind, fields in CONFIGURATION.items()
    }


def test_the_demo_leaves_a_facility_s_deployments_and_automations_alone(
    deployed_stack: LocalStack, tmp_path: Path
) -> None:
    before = server_configuration(deployed_stack.api_url)
    rotation = next(d for d in before["deployments"] if d["name"] == "mx-rotation")
    assert rotation["work_pool_name"] == POOL and before["automations"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_BEAMLINE_")}
    env["PREFECT_API_URL"] = deployed_stack.api_url
    done = subprocess.run(
        cli("demo", "--json", "--workdir", str(tmp_path / "demo")),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert server_configuration(deployed_stack.api_url) == before, done.stdout + done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "deployment 'mx-rotation'" in done.stderr and "PREFECT_API_URL" in done.stderr


def test_rerun_of_a_deployment_the_server_lacks_is_one_clear_line(
    deployed_stack: LocalStack, tmp_path: Path
) -> None:
    done = subprocess.run(
        cli("rerun", "1", "--deployment", "no-such-deployment"),
        env=deployed_stack.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"prefect-beamline rerun: 0 deployments are named 'no-such-deployment' at "
        f"{deployed_stack.api_url}; name it as flow-name/deployment-name"
    ]
