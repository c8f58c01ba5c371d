"""How many collection flow runs one machine holds at once: from its memory and the frame size.

A flow-run process costs a fixed part (Prefect, numpy, h5py, kernels: 259–278 MB
measured from 20 to 5,000 images at 1.1 Mpixel) and a part that grows with the frame: the
frames, mask and work arrays of the chunks it computes at once (552 MB at 16 Mpixel with
two chunks, issue 17: ~9.5 bytes per pixel per chunk). A count alone (`serve --limit 9`)
lets a burst of 16 Mpixel collections hold ~5 GB; this bound holds the burst to the
memory the operator gives the runner (`PREFECT_BEAMLINE_RUN_MEMORY_FRACTION` of what the
machine has available when `serve` starts). Runs are also bounded by the cores
(`PREFECT_BEAMLINE_RUNS_PER_CORE`): past a few per core they only contend.
"""

from __future__ import annotations

import os

FIXED_RUN_BYTES = 280 * 2**20
BYTES_PER_PIXEL_PER_CHUNK = 9.5


def run_bytes(frame_pixels: int, parallel_chunks: int) -> int:
    """Estimated peak memory of one collection's flow-run process."""
    return int(FIXED_RUN_BYTES + BYTES_PER_PIXEL_PER_CHUNK * frame_pixels * parallel_chunks)


def available_memory_bytes() -> int:
    """Memory the kernel says can be given to new processes (Linux MemAvailable), else
    physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def runs_that_fit(
    frame_pixels: int,
    parallel_chunks: int,
    *,
    memory_fraction: float,
    count_limit: int | None = None,
    available_bytes: int | None = None,
) -> int:
    """Concurrent flow runs within `memory_fraction` of available memory (at least one),
    and within `count_limit` when given."""
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    if frame_pixels < 1 or parallel_chunks < 1:
        raise ValueError(
            f"frame_pixels and parallel_chunks must be positive, got {frame_pixels} and "
            f"{parallel_chunks}"
        )
    budget = memory_fraction * (
        available_memory_bytes() if available_bytes is None else available_bytes
    )
    fit = max(1, int(budget // run_bytes(frame_pixels, parallel_chunks)))
    return fit if count_limit is None else min(fit, count_limit)


def runs_the_cores_keep_busy(cores: int, runs_per_core: int) -> int:
    """Concurrent runs beyond which more only contend for the cores.

    Measured on 2 cores (issue 17, 30 small MX collections at once): 17 runs at once did
    62 collections/min; 8 did 73 and 4 did 71-76, each using ~20 % less CPU, because
    every run process carries Prefect's engine, its event and log threads and its
    server calls, and they fought for the same cores.
    """
    return max(1, cores * runs_per_core)


def runner_limit(count_limit: int | None) -> int:
    """The concurrent-run limit for `serve` and the beamline worker: the operator's count,
    lowered to what fits in memory at the largest frame with this runner's chunks at once,
    and to `runs_per_core` per CPU core.

    Chunks computed elsewhere (a Dask cluster, Slurm) hold their frames there: a run here
    then holds about one frame at a time.
    """
    from prefect_beamline.ext.arguments import available_cores
    from prefect_beamline.flows.compute import configured_compute
    from prefect_beamline.settings import get_settings

    settings = get_settings()
    compute = configured_compute()
    local = not (compute.scheduler_address or compute.slurm)
    fit = runs_that_fit(
        settings.max_frame_pixels,
        compute.parallel_chunks if local else 1,
        memory_fraction=settings.run_memory_fraction,
        count_limit=count_limit,
    )
    return min(fit, runs_the_cores_keep_busy(available_cores(), settings.runs_per_core))
