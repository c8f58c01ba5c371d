"""What a run pays for computing on Slurm jobs (the Compute block's `slurm`).

A run on Slurm starts its own dask-jobqueue cluster: sbatch, Slurm starts the job, the
job's Python starts a Dask worker that joins the run's scheduler. This times, with the
cluster the Compute block describes (1 core, 1 GiB, adaptive 0..1 jobs), the wait from
creating the cluster to the first task's result, the round trip of a task on the warm
worker (raw Dask), and closing (scancel); and, beside it, the same first result on a
Dask LocalCluster of one worker process. Repetitions alternate Slurm and local.
Needs a running Slurm (`.ci/slurm-up`); reports why not otherwise.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from distributed import Client, LocalCluster

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.blocks.slurm import SlurmJobs


def slurm_missing() -> str | None:
    """Why no Slurm job can start here, or None."""
    if shutil.which("sinfo") is None:
        return "Slurm is not installed (run .ci/slurm-up as root)"
    states = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    if not {"idle", "mixed"} & set(states.stdout.split()):
        return f"no Slurm node takes jobs (sinfo: {states.stdout.strip() or states.stderr.strip()})"
    return None


def _first_result_s(make_cluster: Callable[[], Any]) -> tuple[float, Any, Client]:
    started = time.perf_counter()
    cluster = make_cluster()
    client = Client(cluster)
    client.submit(sum, [1, 2]).result()
    return time.perf_counter() - started, cluster, client


def _close_s(cluster: Any, client: Client) -> float:
    started = time.perf_counter()
    client.close()
    cluster.close()
    return time.perf_counter() - started


def _task_round_trip_ms(client: Client, n_tasks: int) -> float:
    times = []
    for index in range(n_tasks):
        started = time.perf_counter()
        client.submit(sum, [index, 1], pure=False).result()
        times.append(1000.0 * (time.perf_counter() - started))
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, Any]:
    reason = slurm_missing()
    if reason:
        return {"benchmark": "slurm", "skipped": reason}
    from dask_jobqueue import SLURMCluster

    repeats = 1 if quick else 3
    slurm_first, local_first, slurm_task, slurm_close = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as logs:
        slurm = SlurmJobs(
            memory="1GiB",
            walltime="00:10:00",
            python=sys.executable,
            maximum_jobs=1,
            job_name="beamline-bench",
            log_directory=logs,
        )
        cluster_kwargs = slurm.cluster_kwargs(Compute(slurm=slurm).threads_per_chunk)

        def slurm_cluster() -> Any:
            cluster = SLURMCluster(**cluster_kwargs)
            cluster.adapt(**slurm.adapt_kwargs())
            return cluster

        def local_cluster() -> Any:
            return LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
            )

        for _ in range(repeats):
            seconds, cluster, client = _first_result_s(slurm_cluster)
            slurm_first.append(seconds)
            slurm_task.append(_task_round_trip_ms(client, 5 if quick else 20))
            slurm_close.append(_close_s(cluster, client))
            seconds, cluster, client = _first_result_s(local_cluster)
            local_first.append(seconds)
            _close_s(cluster, client)
    return {
        "benchmark": "slurm",
        "repeats": repeats,
        "slurm_first_result_s": round(statistics.median(slurm_first), 2),
        "slurm_first_result_all_s": [round(x, 2) for x in slurm_first],
        "local_first_result_s": round(statistics.median(local_first), 2),
        "local_first_result_all_s": [round(x, 2) for x in local_first],
        "slurm_task_round_trip_ms": round(statistics.median(slurm_task), 2),
        "slurm_close_s": round(statistics.median(slurm_close), 2),
    }


def report(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"slurm: not run: {result['skipped']}"
    return (
        "Slurm cluster of one job, median of {repeats}: first result {slurm_first_result_s} s "
        "(Dask LocalCluster: {local_first_result_s} s), then {slurm_task_round_trip_ms} ms "
        "per raw Dask task; closing (scancel) {slurm_close_s} s"
    ).format_map(result)
