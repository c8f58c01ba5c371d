"""Dask Compute block: where a facility's analysis cluster listens."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


class DaskCompute(Block):
    """Address of a running `dask.distributed` scheduler that flows fan chunks out to.

    Example:
        ```python
        from prefect_beamline.blocks.compute import DaskCompute

        DaskCompute(scheduler_address="tcp://analysis01:8786").save("cluster")
        # then run a flow with parameters {"compute_block": "cluster"}
        ```
    """

    _block_type_name = "Dask Compute"
    _description = "A dask.distributed scheduler that prefect-beamline flows run chunks on."

    scheduler_address: str = Field(
        description="Address of the Dask scheduler, e.g. tcp://analysis01:8786"
    )

    def task_runner(self) -> Any:
        """A prefect-dask task runner connected to this scheduler."""
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=self.scheduler_address)
