"""Flat/dark normalisation with minus-log, and the ring filter (`ext/_tomo_preprocess.pyx`).

One chunk of a 2048-wide scan (900 projections x 16 detector rows, uint16): the kernels
on 1 thread and on all cores, their plain numpy/scipy references (`tests/tomo_reference`,
what a facility script would write), and one memory pass over the float32 sinograms.
Target (issue 15): normalise within 5x the memory pass (it reads uint16 and writes
float32, so a pass over its output is its floor); the ratio is taken with the output
written into a reused buffer (`normalise_into_ms_*`), as the memory pass writes into one,
both medians of interleaved calls (same load).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.timing import (
    ALL_THREADS,
    best_ms,
    interleaved_ms,
    report_from,
    thread_timings_ms,
)
from prefect_beamline.ext.tomo_preprocess import MIN_TRANSMISSION, normalise, ring_filter
from tests.kernels.tomo_preprocess_reference import reference_normalise, reference_ring_filter

RING_WIDTH = 9


def run(quick: bool = False) -> dict[str, Any]:
    n_angles, n_rows, n_columns = (90, 4, 256) if quick else (900, 16, 2048)
    repeats = 2 if quick else 5
    rng = np.random.default_rng(0)
    flat = rng.uniform(3000, 4000, (n_rows, n_columns)).astype(np.float32)
    dark = rng.uniform(90, 110, (n_rows, n_columns)).astype(np.float32)
    projections = rng.integers(200, 3000, (n_angles, n_rows, n_columns)).astype(np.uint16)

    sinograms = normalise(projections, flat, dark)
    reference = reference_normalise(projections, flat, dark, MIN_TRANSMISSION)
    filtered = ring_filter(sinograms.copy(), width=RING_WIDTH)
    normalise_ms = thread_timings_ms(
        "normalise",
        lambda n_threads: normalise(projections, flat, dark, n_threads=n_threads),
        repeats,
    )
    # Into a reused output buffer, as the memory pass writes into one (and as a caller
    # streaming chunks would): page faults of a fresh 118 MB array are not the kernel's.
    buffer, copy = np.empty_like(sinograms), np.empty_like(sinograms)
    interleaved = interleaved_ms(
        {
            "normalise_into_ms_1t": lambda: normalise(
                projections, flat, dark, out=buffer, n_threads=1
            ),
            "normalise_into_ms_all": lambda: normalise(
                projections, flat, dark, out=buffer, n_threads=ALL_THREADS
            ),
            "memory_pass": lambda: np.copyto(copy, sinograms),
        },
        2 * repeats,
    )
    pass_ms = interleaved.pop("memory_pass")
    normalise_into_ms = interleaved
    return {
        "benchmark": "tomo_preprocess",
        "shape": [n_angles, n_rows, n_columns],
        **normalise_ms,
        **normalise_into_ms,
        "normalise_reference_ms": best_ms(
            lambda: reference_normalise(projections, flat, dark, MIN_TRANSMISSION), 1
        ),
        **thread_timings_ms(
            "ring_filter",
            lambda n_threads: ring_filter(sinograms.copy(), width=RING_WIDTH, n_threads=n_threads),
            repeats,
        ),
        "ring_filter_reference_ms": best_ms(
            lambda: reference_ring_filter(sinograms, RING_WIDTH), 1
        ),
        "memory_pass_ms": pass_ms,
        "normalise_vs_memory_pass_1t": round(
            normalise_into_ms["normalise_into_ms_1t"] / pass_ms, 2
        ),
        "normalise_vs_memory_pass_all": round(
            normalise_into_ms["normalise_into_ms_all"] / pass_ms, 2
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "normalise_max_abs_difference": float(np.abs(sinograms - reference).max()),
        "ring_filter_max_abs_difference": float(
            np.abs(filtered - reference_ring_filter(sinograms, RING_WIDTH)).max()
        ),
        "cores": ALL_THREADS,
    }


report = report_from(
    "normalise {normalise_ms_1t:.1f} ms (1 thread), {normalise_ms_all:.1f} ms (all), "
    "reference {normalise_reference_ms:.1f} ms; ring filter {ring_filter_ms_1t:.1f} / "
    "{ring_filter_ms_all:.1f} ms, reference {ring_filter_reference_ms:.1f} ms; "
    "into a reused buffer {normalise_into_ms_1t:.1f} / {normalise_into_ms_all:.1f} ms; "
    "memory pass {memory_pass_ms:.1f} ms (normalise {normalise_vs_memory_pass_1t}x / "
    "{normalise_vs_memory_pass_all}x it); load {load_average}"
)
