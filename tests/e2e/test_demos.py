"""Every technique's demo on the session's stack, and its saved rerun command run as written.

One parametrised test over the technique registry instead of one demo stack each: the
demo writes its synthetic data, POSTs the DAQ's webhook, waits for the automation-started
run and reports; `tests/techniques/<t>/demo_report.py` says what that report must show.
Then the `command.txt` the job left in its folder is run in a shell, as a scientist who
finds the folder would, and must start a manual job of the same deployment that succeeds.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_beamline.lims import ProcessingJobSummary
from prefect_beamline.stack import LocalStack, cli
from prefect_beamline.techniques import registry, technique

pytestmark = pytest.mark.e2e
RERUN_TIMEOUT_S = 300.0


@pytest.mark.parametrize("name", sorted(registry()))
def test_demo_reports_the_collection_and_its_saved_command_reruns_it(
    name: str, stack: LocalStack, tmp_path: Path
) -> None:
    expected = importlib.import_module(f"tests.techniques.{name}.demo_report")
    report = technique(name).module("demo").run_demo(tmp_path, stack=stack, **expected.OPTIONS)

    assert report["state"] == "COMPLETED", report.get("logs")
    expected.check(report)

    lims = stack.lims
    collection_id = report["collection_id"]
    automatic = [job for job in lims.jobs_for_collection(collection_id) if job.automatic]
    assert automatic and all(job.program_status == "success" for job in automatic)
    command_file = Path(str(automatic[0].results_dir), "command.txt")
    command = shlex.split(command_file.read_text())
    assert command[:2] == ["prefect-beamline", "rerun"]

    # The command as written, in a shell whose PATH finds this installation's CLI.
    shell_env = {**stack.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        f"{command_file.read_text().strip()} --wait --timeout {RERUN_TIMEOUT_S:.0f}",
        shell=True,
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=RERUN_TIMEOUT_S + 30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rerun = [job for job in automatic if job.recipe == automatic[0].recipe]
    manual = wait_for_manual_jobs(stack, collection_id, len(rerun))
    assert {job.recipe for job in manual} == {automatic[0].recipe}
    assert all(job.triggered_by and job.triggered_by.startswith("cli:") for job in manual)


def wait_for_manual_jobs(
    stack: LocalStack, collection_id: int, count: int
) -> list[ProcessingJobSummary]:
    """The collection's manual jobs once `count` of them have succeeded (a rerun of a
    cryo-EM session starts one run per movie, which finish after the dispatching run)."""
    deadline = time.monotonic() + RERUN_TIMEOUT_S
    manual: list[ProcessingJobSummary] = []
    while time.monotonic() < deadline:
        jobs = stack.lims.jobs_for_collection(collection_id)
        manual = [job for job in jobs if not job.automatic]
        if len(manual) >= count and all(
            job.program_status in ("success", "failed") for job in manual
        ):
            break
        time.sleep(0.5)
    assert len(manual) >= count, f"{len(manual)} manual jobs, expected {count}"
    assert all(job.program_status == "success" for job in manual), [
        (job.recipe, job.program_status, job.program_message) for job in manual
    ]
    return manual


def test_the_readme_demo_command_starts_its_own_stack_and_reports(tmp_path: Path) -> None:
    """`make demo` runs `prefect-beamline demo`: its own server, runner and gateway."""
    done = subprocess.run(
        cli("demo", "--json", "--images", "4", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["state"] == "COMPLETED"
    assert report["n_images"] == 4
    assert report["lims_url"] == f"sqlite:///{tmp_path / 'beamline' / 'lims.db'}"
    assert report["lims"][0]["n_image_quality_rows"] == 4
