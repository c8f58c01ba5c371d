"""The back projector alone (`ext/_backproject.pyx`), on already filtered sinograms.

`benchmarks/tomo.py` times the whole FBP against scikit-image's `iradon`; this one
isolates the kernel: a 512-wide slice from 900 angles on 1 thread and on all cores,
against the plain numpy reference of the tests (filter, then np.interp angle by angle, as
`iradon` does), and one memory pass over the sinogram. Back projection does N² work per
angle on data that fits in cache, so it is compute-bound: the memory pass is a floor,
not a target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.timing import ALL_THREADS, best_ms, memory_pass_ms, report_from, thread_timings_ms
from prefect_beamline.ext.backproject import backproject, filter_sinograms
from prefect_beamline.techniques.tomo.synth import phantom_sinogram
from tests.kernels.backproject_reference import reference_fbp
from tests.techniques.tomo.metrics import circle_mask


def run(quick: bool = False) -> dict[str, Any]:
    width, n_angles = (64, 90) if quick else (512, 900)
    repeats = 2 if quick else 3
    angles = np.linspace(0.0, np.pi, n_angles, endpoint=False)
    sinogram = phantom_sinogram(width, np.degrees(angles))
    centre = width / 2.0
    filtered = filter_sinograms(sinogram[None])
    slices = backproject(filtered, angles, centre, output_size=width, circle=False)
    expected = reference_fbp(sinogram, angles, centre, "ramp", width)
    inside = circle_mask(width, margin=1)
    return {
        "benchmark": "backproject",
        "width": width,
        "n_angles": n_angles,
        **thread_timings_ms(
            "kernel",
            lambda n_threads: backproject(
                filtered, angles, centre, output_size=width, n_threads=n_threads
            ),
            repeats,
        ),
        "reference_ms": best_ms(lambda: reference_fbp(sinogram, angles, centre, "ramp", width), 1),
        "memory_pass_ms": memory_pass_ms(filtered, repeats),
        "relative_difference_vs_reference": float(
            np.abs(slices[0] - expected)[inside].max() / np.abs(expected).max()
        ),
        "cores": ALL_THREADS,
    }


report = report_from(
    "back projection {width}² from {n_angles} angles: {kernel_ms_1t:.0f} ms (1 thread), "
    "{kernel_ms_all:.0f} ms (all); numpy reference {reference_ms:.0f} ms; "
    "memory pass {memory_pass_ms:.2f} ms"
)
