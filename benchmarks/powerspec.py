"""Radial / elliptical and sector averages of a power spectrum (`ext/_powerspec.pyx`).

The inner loop of the CTF fit: the fit evaluates an elliptical average (astigmatism as
a quadratic form) many times per movie. Timed on the half-plane spectrum of a 4096²
micrograph (4096 x 2049 float32) against the plain numpy reference of the tests
(`tests/em_reference`: coordinates, then np.bincount, which is what a numpy CTF script
does), and one memory pass over the spectrum. The kernels run on one thread.

The sector average looks each pixel's bin up in a map made once per spectrum shape
(the CTF fit of a session uses one tile size): `sector_map_ms` is that one-off cost,
`sector_ms` an average with the map made. `sector_ms` and `memory_pass_ms` are medians
of interleaved calls (same load). Target (issue 15): `sector_ms` within 5x
`memory_pass_ms`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.timing import best_ms, interleaved_ms, report_from
from prefect_beamline.ext.powerspec import elliptical_average, sector_average, sector_map
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
    sector_map.cache_clear()
    sector_map_ms = best_ms(lambda: sector_map(size, N_SECTORS, n_bins), 1)
    copy = np.empty_like(spectrum)
    interleaved = interleaved_ms(
        {
            "sector": lambda: sector_average(spectrum, N_SECTORS, n_bins),
            "memory_pass": lambda: np.copyto(copy, spectrum),
        },
        3 * repeats,
    )
    sector_ms, pass_ms = interleaved["sector"], interleaved["memory_pass"]
    sector_sums, sector_counts = sector_average(spectrum, N_SECTORS, n_bins)
    ref_sector_sums, ref_sector_counts = em_reference.sector_average(spectrum, N_SECTORS, n_bins)
    return {
        "benchmark": "powerspec",
        "shape": list(spectrum.shape),
        "elliptical_ms": best_ms(
            lambda: elliptical_average(spectrum, *QUADRATIC, n_bins=n_bins), repeats
        ),
        "elliptical_reference_ms": best_ms(
            lambda: em_reference.elliptical_average(spectrum, *QUADRATIC, n_bins), 1
        ),
        "sector_ms": sector_ms,
        "sector_map_ms": sector_map_ms,
        "sector_reference_ms": best_ms(
            lambda: em_reference.sector_average(spectrum, N_SECTORS, n_bins), 1
        ),
        "memory_pass_ms": pass_ms,
        "sector_vs_memory_pass": round(sector_ms / pass_ms, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "counts_equal_reference": bool(np.array_equal(counts, ref_counts)),
        "max_relative_difference_of_sums": float(
            np.abs(sums - ref_sums).max() / max(np.abs(ref_sums).max(), 1e-30)
        ),
        "sector_counts_equal_reference": bool(np.array_equal(sector_counts, ref_sector_counts)),
        "sector_max_relative_difference_of_sums": float(
            np.abs(sector_sums - ref_sector_sums).max() / max(np.abs(ref_sector_sums).max(), 1e-30)
        ),
    }


report = report_from(
    "elliptical average of {shape}: {elliptical_ms:.1f} ms, reference "
    "{elliptical_reference_ms:.0f} ms; sector average {sector_ms:.1f} ms, reference "
    "{sector_reference_ms:.0f} ms ({sector_vs_memory_pass}x the memory pass; map made once "
    "in {sector_map_ms:.0f} ms); memory pass {memory_pass_ms:.1f} ms; load {load_average}"
)
