"""Compute block: where a facility runs the chunks of its flows (threads or Dask).

Where to compute is server-side configuration, never a flow parameter: the DAQ's
announcement cannot name a scheduler, and a rerun moved to a cluster reuses the chunks
it finished on threads (no compute setting is part of a chunk's cache key).
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import Field, field_validator


class Compute(Block):
    """Threads on the flow's own machine, or a running `dask.distributed` scheduler.

    Flows load the block named by PREFECT_BEAMLINE_COMPUTE_BLOCK (set it for the worker
    or `prefect-beamline serve`, or in a deployment's job variables); without one they
    run two chunks at a time on local threads.

    Example:
        ```python
        from prefect_beamline.blocks.compute import Compute

        Compute(scheduler_address="tcp://analysis01:8786", threads_per_chunk=4).save("cluster")
        # then: PREFECT_BEAMLINE_COMPUTE_BLOCK=cluster prefect-beamline serve
        ```
    """

    _block_type_name = "Beamline Compute"
    _description = "Where prefect-beamline flows run their chunks: local threads or Dask."

    scheduler_address: str | None = Field(
        None,
        description="Address of a Dask scheduler, e.g. tcp://analysis01:8786; empty: local threads",
    )
    parallel_chunks: int = Field(
        2, ge=1, le=256, description="Chunks at once on local threads (ignored on Dask)"
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

    def task_runner(self) -> TaskRunner:
        """A prefect-dask runner connected to the scheduler, else a thread pool."""
        if self.scheduler_address:
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(address=self.scheduler_address)
        return ThreadPoolTaskRunner(max_workers=self.parallel_chunks)
