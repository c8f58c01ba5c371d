"""Gain correction + sub-pixel shifted frame sum (`ext/_motioncor.pyx`), one 4096² frame.

The step of motion correction that touches every full-resolution pixel of every frame:
`shift_accumulate` (gain multiply, bilinear sample at a smooth shift field held per
32-px tile, add into the sum) on 1 thread and on all cores, against the best peer that
runs here for the same job, scipy.ndimage.shift (order 1, one global shift) after a
numpy gain multiply and followed by the add, against the plain numpy reference of the
tests (`tests/em_reference.shift_sample`), and one memory pass over the float32 sum.
`benchmarks/em.py` times the whole movie by step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.timing import ALL_THREADS, best_ms, memory_pass_ms, report_from, thread_timings_ms
from prefect_beamline.ext.motioncor import DEFAULT_TILE, shift_accumulate
from tests.kernels.motioncor_reference import shift_sample

SHIFT_X = [2.37, 0.4, -0.2, 0.1, 0.05, -0.08]  # quadratic field coefficients (pixels)
SHIFT_Y = [-1.61, 0.1, 0.3, -0.05, 0.02, 0.04]


def run(quick: bool = False) -> dict[str, Any]:
    size = 256 if quick else 4096
    repeats = 2 if quick else 5
    rng = np.random.default_rng(0)
    raw = rng.poisson(1.0, (size, size)).astype(np.int8)  # counting mode, ~1 e/px/frame
    gain = rng.uniform(0.9, 1.1, (size, size)).astype(np.float32)
    coeff_x, coeff_y = np.array(SHIFT_X), np.array(SHIFT_Y)
    total = np.zeros((size, size), dtype=np.float32)

    def peer() -> None:
        corrected = raw.astype(np.float32) * gain
        total[...] += ndimage.shift(corrected, (SHIFT_Y[0], SHIFT_X[0]), order=1)

    expected = shift_sample(raw, gain, coeff_x, coeff_y, DEFAULT_TILE)
    return {
        "benchmark": "motioncor",
        "shape": [size, size],
        **thread_timings_ms(
            "kernel",
            lambda n_threads: shift_accumulate(raw, gain, coeff_x, coeff_y, total, n_threads),
            repeats,
        ),
        "scipy_shift_ms": best_ms(peer, 2),
        "reference_ms": best_ms(lambda: shift_sample(raw, gain, coeff_x, coeff_y, DEFAULT_TILE), 1),
        "memory_pass_ms": memory_pass_ms(total, repeats),
        "max_abs_difference_vs_reference": float(
            np.abs(_one_sum(raw, gain, coeff_x, coeff_y) - expected).max()
        ),
        "cores": ALL_THREADS,
    }


def _one_sum(
    raw: np.ndarray, gain: np.ndarray, coeff_x: np.ndarray, coeff_y: np.ndarray
) -> np.ndarray:
    out = np.zeros(raw.shape, dtype=np.float32)
    shift_accumulate(raw, gain, coeff_x, coeff_y, out, 1)
    return out


report = report_from(
    "shifted sum of one {shape[0]}² frame: {kernel_ms_1t:.1f} ms (1 thread), "
    "{kernel_ms_all:.1f} ms (all); scipy.ndimage.shift {scipy_shift_ms:.1f} ms; "
    "numpy reference {reference_ms:.0f} ms; memory pass {memory_pass_ms:.1f} ms"
)
