"""Where chunks run: the Compute block the server names, else local threads."""

from __future__ import annotations

from prefect_beamline.blocks.compute import Compute


def configured_compute() -> Compute:
    """The block named by PREFECT_BEAMLINE_COMPUTE_BLOCK, else two chunks on threads.

    A named block that cannot be loaded fails the run: computing somewhere else than the
    operator configured would hide the mistake.
    """
    from prefect_beamline.settings import get_settings

    name = get_settings().compute_block
    if not name:
        return Compute()
    try:
        block = Compute.load(name)
    except ValueError as error:
        raise RuntimeError(
            f"PREFECT_BEAMLINE_COMPUTE_BLOCK names the Beamline Compute block {name!r}, "
            f"which cannot be loaded: {error}"
        ) from error
    assert isinstance(block, Compute)
    return block


def where_this_runs() -> str:
    """Host, Dask worker and Slurm job of the calling chunk, for its log: an operator (and
    the tests) can tell which compute did the work."""
    import contextlib
    import os
    import socket
    import sys

    place = socket.gethostname()
    # A Dask worker has imported distributed; importing it only to ask cost a local run
    # ~0.15 s of CPU (issue 17).
    distributed = sys.modules.get("distributed")
    worker = None
    if distributed is not None:
        with contextlib.suppress(ValueError):  # imported, but not on a worker's thread
            worker = distributed.get_worker().name
    place += ", local thread" if worker is None else f", dask worker {worker}"
    if job_id := os.environ.get("SLURM_JOB_ID"):
        place += f", slurm job {job_id}"
    return place
