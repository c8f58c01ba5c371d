"""Filtered back projection of one 2048-wide sinogram with 1800 angles.

Measured in one run: the Cython FBP (FFT filter + back projection, `reconstruct`) on
1 thread and on all cores, scikit-image's `iradon` (the peer; same ramp filter, same
angles, same centre, timed once: it takes minutes at this size), and one pass over the
sinogram's memory (`numpy.copyto`). Both reconstruct the full N x N square
(`circle=False`) so they do the same work, and their agreement inside the inscribed
circle is reported. Target (issue 3): >= 20x faster than iradon on one thread, and
scaling with cores.

Run as the README says, without the OpenBLAS variables this machine's environment may
set (they can slow a current numpy):
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/run.py tomo`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prefect_beamline.ext.backproject import reconstruct
from prefect_beamline.techniques.tomo.synth import phantom_sinogram
from tests.techniques.tomo.metrics import circle_mask

FULL = (2048, 1800)  # detector columns, angles
QUICK = (256, 180)


def timed_ms(function: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    """Median of `repeats` timings (after one warm-up unless told not), milliseconds."""
    if warm_up:
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run(quick: bool = False) -> dict[str, Any]:
    from skimage.transform import iradon

    n_columns, n_angles = QUICK if quick else FULL
    angles_deg = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    angles_rad = np.deg2rad(angles_deg)
    sinogram = phantom_sinogram(n_columns, angles_deg)
    cores = os.cpu_count() or 1
    centre = n_columns // 2  # iradon's centre

    def ours(threads: int) -> np.ndarray:
        return reconstruct(sinogram[None], angles_rad, centre, circle=False, n_threads=threads)[0]

    copy = np.empty_like(sinogram)
    memory_pass_ms = timed_ms(lambda: np.copyto(copy, sinogram), 20)
    repeats = 3 if quick else 1
    kernel_ms_1t = timed_ms(lambda: ours(1), repeats, warm_up=quick)
    kernel_ms_all = timed_ms(lambda: ours(cores), repeats, warm_up=quick)
    start = time.perf_counter()
    expected = iradon(
        sinogram.T.astype(np.float64), angles_deg, filter_name="ramp", circle=False,
        output_size=n_columns,
    )  # fmt: skip
    iradon_ms = 1000.0 * (time.perf_counter() - start)
    inside = circle_mask(n_columns, margin=1)
    difference = float(np.abs(ours(cores) - expected)[inside].max())
    return {
        "benchmark": "tomo",
        "n_columns": n_columns,
        "n_angles": n_angles,
        "output_shape": [n_columns, n_columns],
        "filter": "ramp",
        "cores": cores,
        "kernel_ms_1t": round(kernel_ms_1t, 1),
        "kernel_ms_all": round(kernel_ms_all, 1),
        "iradon_ms": round(iradon_ms, 1),
        "memory_pass_ms": round(memory_pass_ms, 3),
        "speedup_vs_iradon_1t": round(iradon_ms / kernel_ms_1t, 1),
        "scaling_all_cores": round(kernel_ms_1t / kernel_ms_all, 2),
        "ns_per_pixel_angle_1t": round(1e6 * kernel_ms_1t / (n_columns**2 * n_angles), 3),
        "max_abs_difference_vs_iradon": difference,
        "relative_difference_vs_iradon": difference / float(np.abs(expected).max()),
        "peer": f"scikit-image {_skimage_version()} iradon (linear interpolation)",
        "targets": {"speedup_vs_iradon_1t": ">= 20", "scaling_all_cores": "> 1"},
    }


def _skimage_version() -> str:
    from importlib.metadata import version

    return version("scikit-image")


def report(result: dict[str, Any]) -> str:
    size = f"{result['n_columns']}-wide sinogram, {result['n_angles']} angles"
    return "\n".join(
        [
            f"filtered back projection of one {size} (ramp filter, full square output)",
            f"  Cython FBP, 1 thread           {result['kernel_ms_1t']:10.1f} ms",
            f"  Cython FBP, {result['cores']} threads          {result['kernel_ms_all']:10.1f} ms",
            f"  scikit-image iradon (once)     {result['iradon_ms']:10.1f} ms",
            f"  one memory pass over sinogram  {result['memory_pass_ms']:10.3f} ms",
            f"  speed-up vs iradon on 1 thread {result['speedup_vs_iradon_1t']}x (target >= 20x); "
            f"{result['scaling_all_cores']}x on {result['cores']} cores",
            f"  {result['ns_per_pixel_angle_1t']} ns per pixel and angle on 1 thread",
            f"  agreement with iradon: max |difference| "
            f"{result['relative_difference_vs_iradon']:.1e} of the range",
        ]
    )
