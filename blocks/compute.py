"""Compute block: where a facility runs the chunks of its flows (threads, Dask or Slurm).

Where to compute is server-side configuration, never a flow parameter: the DAQ's
announcement cannot name a scheduler or a Slurm queue, and a rerun moved to a cluster
reuses the chunks it finished on threads (no compute setting is part of a chunk's cache
key).
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import Field, field_validator, model_validator

from prefect_beamline.blocks.slurm import SlurmJobs


class Compute(Block):
    """Local threads, a running `dask.distributed` scheduler, or Dask workers as Slurm jobs.

    One kind at a time: no `scheduler_address` and no `slurm` means local threads.
    Flows load the block named by PREFECT_BEAMLINE_COMPUTE_BLOCK (set it for the worker
    or `prefect-beamline serve`, or in a deployment's job variables); without one they
    run two chunks at a time on local threads.

    Example:
        ```python
        from prefect_beamline.blocks.compute import Compute
        from prefect_beamline.blocks.slurm import SlurmJobs

        Compute(scheduler_address="tcp://analysis01:8786", threads_per_chunk=4).save("cluster")
        Compute(
            slurm=SlurmJobs(queue="analysis", cores=8, memory="16GiB", maximum_jobs=10),
            threads_per_chunk=4,
        ).save("slurm")
        # then: PREFECT_BEAMLINE_COMPUTE_BLOCK=slurm prefect-beamline serve
        ```
    """

    _block_type_name = "Beamline Compute"
    _description = (
        "Where prefect-beamline flows run their chunks: local threads, Dask or Slurm jobs."
    )

    scheduler_address: str | None = Field(
        None,
        description="Address of a Dask scheduler, e.g. tcp://analysis01:8786; empty: local threads",
    )
    slurm: SlurmJobs | None = Field(
        None,
        description="Dask workers as Slurm jobs (dask-jobqueue), started for each run; "
        "empty: local threads",
    )
    parallel_chunks: int = Field(
        2, ge=1, le=256, description="Chunks at once on local threads or a Dask scheduler"
    )
    threads_per_chunk: int = Field(1, ge=1, le=256, description="Kernel threads per chunk")

    @field_validator("scheduler_address")
    @classmethod
    def _is_an_address(cls, address: str | None) -> str | None:
        if address is not None and "://" not in address:
            raise ValueError(
                f"scheduler_address must be a Dask address such as tcp://host:8786, got {address!r}"
            )
        return address or None

    @model_validator(mode="after")
    def _one_kind_of_cluster(self) -> Compute:
        if self.scheduler_address and self.slurm:
            raise ValueError(
                "set either scheduler_address (a running Dask scheduler) or slurm "
                "(Dask workers as Slurm jobs), not both"
            )
        if self.slurm:
            self.slurm.check_fits(self.threads_per_chunk)
        return self

    @property
    def chunks_at_once(self) -> int:
        """How many chunks this compute runs at the same time, at most."""
        if self.slurm:
            return self.slurm.maximum_jobs * self.slurm.chunks_per_job(self.threads_per_chunk)
        return self.parallel_chunks

    def task_runner(self) -> TaskRunner:
        """A thread pool, else a prefect-dask runner on the scheduler or on Slurm jobs."""
        if not (self.scheduler_address or self.slurm):
            return ThreadPoolTaskRunner(max_workers=self.parallel_chunks)
        from prefect_beamline.blocks.dask_runner import DrainingDaskTaskRunner

        if self.scheduler_address:
            return DrainingDaskTaskRunner(address=self.scheduler_address)
        assert self.slurm is not None
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as error:
            raise RuntimeError(
                "the Compute block's slurm needs dask-jobqueue on the flow's machine: "
                "pip install 'prefect-beamline[slurm]'"
            ) from error
        return DrainingDaskTaskRunner(
            cluster_class=SLURMCluster,
            cluster_kwargs=self.slurm.cluster_kwargs(self.threads_per_chunk),
            adapt_kwargs=self.slurm.adapt_kwargs(),
        )
