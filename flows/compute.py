"""Where chunks run: local threads by default, a Dask cluster when one is named."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


def task_runner_for(
    dask_scheduler: str | None, compute_block: str | None, parallel_chunks: int
) -> TaskRunner:
    """A DaskTaskRunner for a named scheduler or Dask Compute block, else threads."""
    if compute_block:
        from prefect_beamline.blocks.compute import DaskCompute

        block = DaskCompute.load(compute_block)
        assert isinstance(block, DaskCompute)
        return block.task_runner()
    if dask_scheduler:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_scheduler)
    return ThreadPoolTaskRunner(max_workers=parallel_chunks)
