"""Slurm jobs as Dask workers: the `slurm` part of the Compute block.

Each flow run that fans out chunks starts its own dask-jobqueue `SLURMCluster`: a Dask
scheduler inside the flow run, and Dask workers that are Slurm jobs, added while chunks
wait and cancelled (scancel) when the run's chunks are done. What a job reserves, where
it queues and which Python it runs are the operator's: nothing here comes from the DAQ.
"""

from __future__ import annotations

import re
from typing import Any

from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")


class SlurmJobs(BaseModel):
    """What each Slurm job of Dask workers reserves, and how many jobs a run may hold.

    A job reserves `cores` CPUs and `memory`, and runs `processes` Dask worker
    processes; each process runs cores / processes / threads_per_chunk chunks at once,
    each chunk on the Compute block's `threads_per_chunk` kernel threads.
    """

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(
        None, description="Slurm partition (sbatch --partition); empty: the cluster's default"
    )
    account: str | None = Field(
        None, description="Slurm account charged (sbatch --account); empty: the user's default"
    )
    cores: int = Field(1, ge=1, le=1024, description="CPUs each job reserves (--cpus-per-task)")
    processes: int = Field(
        1, ge=1, le=256, description="Dask worker processes per job; they share its cores"
    )
    memory: str = Field(
        "4GiB", description="Memory each job reserves (sbatch --mem), shared by its processes"
    )
    walltime: str = Field(
        "01:00:00", description="Longest a job may run (sbatch --time), e.g. 01:00:00 or 1-00:00:00"
    )
    job_extra_directives: list[str] = Field(
        default_factory=list,
        description="More sbatch options, one per entry, e.g. --qos=beamline or --gres=gpu:1",
    )
    python: str | None = Field(
        None,
        description="Absolute path of the Python on the compute nodes that has prefect-beamline "
        "installed; empty: the same path as the flow's own Python",
    )
    local_directory: str | None = Field(
        None, description="Scratch directory of the workers on the compute node, e.g. /tmp"
    )
    log_directory: str | None = Field(
        None, description="Where the jobs' stdout/stderr go; empty: Slurm's default (slurm-N.out)"
    )
    interface: str | None = Field(
        None, description="Network interface the workers and scheduler talk over, e.g. ib0"
    )
    job_name: str = Field(
        "beamline-chunks", min_length=1, description="Job name squeue and sacct show"
    )
    minimum_jobs: int = Field(0, ge=0, le=1000, description="Jobs kept while a run computes")
    maximum_jobs: int = Field(4, ge=1, le=1000, description="Most jobs one run holds at once")

    @field_validator("memory")
    @classmethod
    def _is_an_amount_of_memory(cls, memory: str) -> str:
        try:
            parse_bytes(memory)
        except ValueError as error:
            raise ValueError(f"memory must be an amount such as 16GiB, got {memory!r}") from error
        return memory

    @field_validator("walltime")
    @classmethod
    def _is_a_slurm_time(cls, walltime: str) -> str:
        if not _WALLTIME.match(walltime):
            raise ValueError(
                f"walltime must be a Slurm time such as 01:00:00 or 1-00:00:00, got {walltime!r}"
            )
        return walltime

    @field_validator("job_extra_directives")
    @classmethod
    def _are_sbatch_options(cls, directives: list[str]) -> list[str]:
        for directive in directives:
            if not directive.startswith("-") or "\n" in directive:
                raise ValueError(
                    "job_extra_directives entries are single sbatch options such as "
                    f"--qos=beamline (without #SBATCH), got {directive!r}"
                )
        return directives

    @field_validator("python")
    @classmethod
    def _is_absolute(cls, python: str | None) -> str | None:
        if python and not python.startswith("/"):
            raise ValueError(f"python must be an absolute path, got {python!r}")
        return python or None

    @model_validator(mode="after")
    def _consistent(self) -> SlurmJobs:
        if self.processes > self.cores:
            raise ValueError(
                f"processes ({self.processes}) must not exceed cores ({self.cores}): "
                "each worker process needs a core"
            )
        if self.minimum_jobs > self.maximum_jobs:
            raise ValueError(
                f"minimum_jobs ({self.minimum_jobs}) must not exceed "
                f"maximum_jobs ({self.maximum_jobs})"
            )
        return self

    def chunks_per_job(self, threads_per_chunk: int) -> int:
        """Chunks one job runs at once: its cores shared out in kernel threads per chunk."""
        return self.cores // threads_per_chunk

    def check_fits(self, threads_per_chunk: int) -> None:
        """Each worker process runs whole chunks: cores split evenly into processes × threads."""
        if self.cores % (self.processes * threads_per_chunk):
            raise ValueError(
                f"slurm.cores ({self.cores}) must be a multiple of slurm.processes "
                f"({self.processes}) × threads_per_chunk ({threads_per_chunk})"
            )

    def cluster_kwargs(self, threads_per_chunk: int) -> dict[str, Any]:
        """Arguments of dask_jobqueue.SLURMCluster: Dask threads are chunk slots, while
        Slurm reserves every core the kernels use."""
        kwargs: dict[str, Any] = {
            "cores": self.chunks_per_job(threads_per_chunk),
            "job_cpu": self.cores,
            "processes": self.processes,
            "memory": self.memory,
            "walltime": self.walltime,
            "job_name": self.job_name,
            "job_extra_directives": list(self.job_extra_directives),
            # One scheduler per run: runs at the same time must not fight over port 8787.
            "scheduler_options": {"dashboard_address": ":0"},
        }
        optional = {
            "queue": self.queue,
            "account": self.account,
            "python": self.python,
            "local_directory": self.local_directory,
            "log_directory": self.log_directory,
            "interface": self.interface,
        }
        kwargs.update({name: value for name, value in optional.items() if value})
        return kwargs

    def adapt_kwargs(self) -> dict[str, int]:
        """Slurm jobs added while chunks wait, cancelled when they are done."""
        return {"minimum_jobs": self.minimum_jobs, "maximum_jobs": self.maximum_jobs}
