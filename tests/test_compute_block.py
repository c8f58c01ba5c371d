"""The Compute block (no server needed): one kind of cluster at a time, Slurm resources
that fit together, refused with the field named, and the task runner each kind gives."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from dask_jobqueue import SLURMCluster
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.blocks.dask_runner import DrainingDaskTaskRunner
from prefect_beamline.blocks.slurm import SlurmJobs
from prefect_beamline.flows.compute import where_this_runs


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"memory": "lots"}, "memory"),
        ({"walltime": "1h"}, "walltime"),
        ({"walltime": "01:00:00:00"}, "walltime"),
        ({"job_extra_directives": ["#SBATCH --qos=x"]}, "job_extra_directives"),
        ({"job_extra_directives": ["--qos=x\nrm -rf /"]}, "job_extra_directives"),
        ({"python": "python3"}, "python"),
        ({"cores": 0}, "cores"),
        ({"cores": 2, "processes": 4}, "processes"),
        ({"minimum_jobs": 5, "maximum_jobs": 2}, "minimum_jobs"),
        ({"partition": "debug"}, "partition"),  # Slurm's partition is dask-jobqueue's queue
    ],
)
def test_slurm_resources_that_do_not_make_sense_are_refused_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        SlurmJobs(**fields)


@pytest.mark.parametrize("walltime", ["30", "30:00", "01:00:00", "2-0", "2-12:00", "1-00:00:00"])
def test_every_slurm_time_format_is_a_walltime(walltime: str) -> None:
    assert SlurmJobs(walltime=walltime).walltime == walltime


def test_one_kind_of_cluster_at_a_time() -> None:
    with pytest.raises(ValidationError, match="scheduler_address.*slurm.*not both"):
        Compute(scheduler_address="tcp://analysis01:8786", slurm=SlurmJobs())


def test_a_jobs_cores_must_split_into_its_processes_and_kernel_threads() -> None:
    with pytest.raises(ValidationError, match=r"slurm.cores \(6\).*slurm.processes \(1\).*\(4\)"):
        Compute(slurm=SlurmJobs(cores=6), threads_per_chunk=4)


def test_a_slurm_block_round_trips_through_its_stored_form() -> None:
    compute = Compute(slurm=SlurmJobs(queue="analysis", cores=8, job_extra_directives=["--qos=x"]))
    restored = Compute.model_validate(compute.model_dump(mode="json"))
    assert restored.slurm == compute.slurm


def test_local_threads_by_default() -> None:
    runner = Compute(parallel_chunks=3).task_runner()
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert Compute(parallel_chunks=3).chunks_at_once == 3


def test_slurm_jobs_reserve_the_kernels_cores_and_run_whole_chunks() -> None:
    slurm = SlurmJobs(
        queue="analysis",
        account="mx",
        cores=8,
        processes=2,
        memory="16GiB",
        walltime="02:00:00",
        job_extra_directives=["--qos=beamline"],
        python="/opt/beamline/bin/python",
        local_directory="/scratch",
        minimum_jobs=1,
        maximum_jobs=3,
    )
    compute = Compute(slurm=slurm, threads_per_chunk=2)
    runner = compute.task_runner()

    assert isinstance(runner, DrainingDaskTaskRunner)
    assert runner.cluster_class is SLURMCluster
    assert runner.adapt_kwargs == {"minimum_jobs": 1, "maximum_jobs": 3}
    # 8 cores = 2 processes x 2 chunks x 2 kernel threads: Dask sees 4 chunk slots.
    assert compute.chunks_at_once == 3 * 4
    script = SLURMCluster(**runner.cluster_kwargs).job_script()
    for line in (
        "#SBATCH -p analysis",
        "#SBATCH -A mx",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16G",
        "#SBATCH -t 02:00:00",
        "#SBATCH --qos=beamline",
        "#SBATCH -J beamline-chunks",
    ):
        assert line in script
    assert "/opt/beamline/bin/python -m distributed.cli.dask_worker" in script
    assert "--nthreads 2 --memory-limit 8.00GiB --nworkers 2" in script
    assert "--local-directory /scratch" in script


def test_naming_where_a_local_chunk_runs_does_not_import_dask() -> None:
    """Importing distributed only to ask cost every local run ~0.15 s of CPU (issue 17)."""
    script = (
        "import sys\n"
        "from prefect_beamline.flows.compute import where_this_runs\n"
        "print(where_this_runs().endswith('local thread'), 'distributed' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr


def test_a_chunk_on_a_dask_worker_names_the_worker() -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        place = client.submit(where_this_runs, pure=False).result()
    assert ", dask worker " in place and "local thread" not in place
