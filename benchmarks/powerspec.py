"""Radial / elliptical and sector averages of a power spectrum (`ext/_powerspec.pyx`).

The inner loop of the CTF fit: the fit evaluates an elliptical average (astigmatism as
a quadratic form) many times per movie. Timed on the half-plane spectrum of a 4096²
micrograph (4096 x 2049 float32) against the plain numpy reference of the tests
(`tests/em_reference`: coordinates, then np.bincount, which is what a numpy CTF script
does), and one memory pass over the spectrum. The kernels run on one thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.timing import best_ms, memory_pass_ms, report_from
from prefect_beamline.ext.powerspec import elliptical_average, sector_average
from tests.kernels import powerspec_reference as em_reference

QUADRATIC = (1.04, 0.03, 0.97)  # an astigmatic ellipse: r² = a kx² + 2 b kx ky + c ky²
N_SECTORS = 18


def run(quick: bool = False) -> dict[str, Any]:
    size = 256 if quick else 4096
    repeats = 2 if quick else 5
    n_bins = size // 2 + 1
    rng = np.random.default_rng(0)
    spectrum = rng.uniform(0.0, 1.0, (size, size // 2 + 1)).astype(np.float32)
    sums, counts = elliptical_average(spectrum, *QUADRATIC, n_bins=n_bins)
    ref_sums, ref_counts = em_reference.elliptical_average(spectrum, *QUADRATIC, n_bins)
    return {
        "benchmark": "powerspec",
        "shape": list(spectrum.shape),
        "elliptical_ms": best_ms(
            lambda: elliptical_average(spectrum, *QUADRATIC, n_bins=n_bins), repeats
        ),
        "elliptical_reference_ms": best_ms(
            lambda: em_reference.elliptical_average(spectrum, *QUADRATIC, n_bins), 1
        ),
        "sector_ms": best_ms(lambda: sector_average(spectrum, N_SECTORS, n_bins), repeats),
        "sector_reference_ms": best_ms(
            lambda: em_reference.sector_average(spectrum, N_SECTORS, n_bins), 1
        ),
        "memory_pass_ms": memory_pass_ms(spectrum, repeats),
        "counts_equal_reference": bool(np.array_equal(counts, ref_counts)),
        "max_relative_difference_of_sums": float(
            np.abs(sums - ref_sums).max() / max(np.abs(ref_sums).max(), 1e-30)
        ),
    }


report = report_from(
    "elliptical average of {shape}: {elliptical_ms:.1f} ms, reference "
    "{elliptical_reference_ms:.0f} ms; sector average {sector_ms:.1f} ms, reference "
    "{sector_reference_ms:.0f} ms; memory pass {memory_pass_ms:.1f} ms"
)
