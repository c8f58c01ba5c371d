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

import time
from typing import Any

import numpy as np

from benchmarks.timing import ALL_THREADS, median_ms, report_from
from prefect_beamline.ext.backproject import reconstruct
from prefect_beamline.techniques.tomo.synth import phantom_sinogram
from tests.techniques.tomo.metrics import circle_mask

FULL = (2048, 1800)  # detector columns, angles
QUICK = (256, 180)


def run(quick: bool = False) -> dict[str, Any]:
    from skimage.transform import iradon

    n_columns, n_angles = QUICK if quick else FULL
    angles_deg = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    angles_rad = np.deg2rad(angles_deg)
    sinogram = phantom_sinogram(n_columns, angles_deg)
    centre = n_columns // 2  # iradon's centre

    def ours(threads: int) -> np.ndarray:
        return reconstruct(sinogram[None], angles_rad, centre, circle=False, n_threads=threads)[0]

    copy = np.empty_like(sinogram)
    memory_pass_ms = median_ms(lambda: np.copyto(copy, sinogram), 20)
    repeats = 3 if quick else 1
    kernel_ms_1t = median_ms(lambda: ours(1), repeats, warm_up=quick)
    kernel_ms_all = median_ms(lambda: ours(ALL_THREADS), repeats, warm_up=quick)
    start = time.perf_counter()
    expected = iradon(
        sinogram.T.astype(np.float64), angles_deg, filter_name="ramp", circle=False,
        output_size=n_columns,
    )  # fmt: skip
    iradon_ms = 1000.0 * (time.perf_counter() - start)
    inside = circle_mask(n_columns, margin=1)
    difference = float(np.abs(ours(ALL_THREADS) - expected)[inside].max())
    return {
        "benchmark": "tomo",
        "n_columns": n_columns,
        "n_angles": n_angles,
        "output_shape": [n_columns, n_columns],
        "filter": "ramp",
        "cores": ALL_THREADS,
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


report = report_from(
    "filtered back projection of one {n_columns}-wide sinogram, {n_angles} angles "
    "(ramp filter, full square output)\n"
    "  Cython FBP, 1 thread           {kernel_ms_1t:10.1f} ms\n"
    "  Cython FBP, {cores} threads          {kernel_ms_all:10.1f} ms\n"
    "  scikit-image iradon (once)     {iradon_ms:10.1f} ms\n"
    "  one memory pass over sinogram  {memory_pass_ms:10.3f} ms\n"
    "  speed-up vs iradon on 1 thread {speedup_vs_iradon_1t}x (target >= 20x); "
    "{scaling_all_cores}x on {cores} cores\n"
    "  {ns_per_pixel_angle_1t} ns per pixel and angle on 1 thread\n"
    "  agreement with iradon: max |difference| {relative_difference_vs_iradon:.1e} of the range"
)
