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
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
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
    assert re.fullmatch(rf"{name}-dc{report['collection_id']}-job\d+", report["flow_run_name"])

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
    # The saved command reproduces each job bit for bit, and both say where they came from.
    for original in rerun:
        again = next(job for job in manual if job.parameters == original.parameters)
        assert again.changed == {}
        assert_same_results(Path(str(original.results_dir)), Path(str(again.results_dir)))
        for job in (original, again):
            assert_provenance(job)


# What differs between two jobs by design: who, when, which run (not the results).
JOB_FILES = {"inputs.json", "command.txt", "provenance.json", "checkpoint.h5"}


def assert_same_results(first: Path, second: Path) -> None:
    """Every result file of `first` is in `second` with the same content: HDF5 datasets
    compared byte for byte (HDF5 files hold creation times), other files whole."""
    import h5py

    names = sorted(p.name for p in first.iterdir() if p.is_file() and p.name not in JOB_FILES)
    assert names, f"{first} holds no results"
    for name in names:
        one, two = first / name, second / name
        assert two.is_file(), f"{two} missing"
        if name.endswith((".h5", ".nxs")):
            with h5py.File(one) as a, h5py.File(two) as b:
                datasets = hdf5_datasets(a)
                assert datasets, f"{one} holds no datasets"
                for key in datasets:
                    same = np.asarray(a[key][()]).tobytes() == np.asarray(b[key][()]).tobytes()
                    assert same, f"{name}:{key} differs"
        else:
            text_one = result_bytes(one, first)
            text_two = result_bytes(two, second)
            assert text_one == text_two, f"{name} differs between {first} and {second}"


def result_bytes(path: Path, folder: Path) -> bytes:
    """A result file's bytes, its own folder's name masked; a STAR file without its
    comments (the starfile package stamps the time it wrote the file there), a JSON
    summary without its step timings and job id."""
    content = path.read_bytes().replace(str(folder).encode(), b"<job>")
    if path.suffix == ".star":
        content = b"\n".join(line for line in content.split(b"\n") if not line.startswith(b"#"))
    if path.suffix == ".json":  # how long steps took, and the job's id, are no results
        document = json.loads(content)
        if isinstance(document, dict):
            document.pop("timings", None)
            document.pop("processing_job_id", None)
        content = json.dumps(document, sort_keys=True).encode()
    return content


def hdf5_datasets(file: Any) -> list[str]:
    """Paths of every dataset in an open HDF5 file."""
    import h5py

    found: list[str] = []
    file.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset) else None)
    return found


def assert_provenance(job: ProcessingJobSummary) -> None:
    """provenance.json in the folder and the LIMS job's short form agree on the code and
    the data: version, commit, kernel build, input files, the master's hash."""
    folder = Path(str(job.results_dir))
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["code"]["version"] and provenance["code"]["commit"]
    assert provenance["kernels"]["modules_sha256"] and provenance["kernels"]["chosen_at_load"]
    inputs = provenance["inputs"]
    assert all(item["size"] > 0 and item["mtime_ns"] > 0 for item in inputs["files"])
    assert len(inputs["master_sha256"]) == 64
    assert provenance["parameters"] == job.parameters
    # The program row names the code and the method, as ISPyB's processingPrograms does.
    code = provenance["code"]
    assert (job.programs or "").startswith(f"{code['package']} {code['version']} {job.recipe}: ")
    assert len(job.programs or "") > len(f"{code['package']} {code['version']} {job.recipe}: ")
    record = job.record
    assert record["provenance.version"] == provenance["code"]["version"]
    assert record["provenance.commit"] == provenance["code"]["commit"]
    assert record["provenance.master_sha256"] == inputs["master_sha256"]
    assert record["provenance.kernels"]["chosen_at_load"] == provenance["kernels"]["chosen_at_load"]
    inputs_file = json.loads((folder / "inputs.json").read_text())
    assert inputs_file["parameters"] == job.parameters
    assert inputs_file["flow_run_url"] == record["prefect.flow_run_url"]


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
