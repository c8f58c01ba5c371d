"""Timing and report helpers the benchmarks share: wall times of repeated calls, one
memory pass, a kernel's times on one thread and on every core (`<name>_ms_1t`,
`<name>_ms_all`), and a report made from a template of the result's numbers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

ALL_THREADS = os.cpu_count() or 1


def timings_ms(
    function: Callable[[], object], repeats: int, *, warm_up: bool = False
) -> list[float]:
    """Wall time of each of `repeats` calls, in ms (after one uncounted call if `warm_up`)."""
    if warm_up:
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(1000.0 * (time.perf_counter() - started))
    return times


def best_ms(function: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls, in ms: the run a shared machine disturbs least."""
    return min(timings_ms(function, repeats))


def median_ms(function: Callable[[], object], repeats: int, *, warm_up: bool = True) -> float:
    """Median of `repeats` calls, in ms, after one warm-up call unless told not."""
    return statistics.median(timings_ms(function, repeats, warm_up=warm_up))


def memory_pass_ms(array: np.ndarray, repeats: int) -> float:
    """One read and one write of `array` (`numpy.copyto` into a preallocated copy)."""
    target = np.empty_like(array)
    return best_ms(lambda: np.copyto(target, array), repeats)


def thread_timings_ms(name: str, kernel: Callable[[int], object], repeats: int) -> dict[str, float]:
    """`<name>_ms_1t` and `<name>_ms_all`: `kernel(n_threads)` on 1 thread and on every
    core, each the fastest of `repeats` calls."""
    return {
        f"{name}_ms_1t": best_ms(lambda: kernel(1), repeats),
        f"{name}_ms_all": best_ms(lambda: kernel(ALL_THREADS), repeats),
    }


def report_from(template: str) -> Callable[[Mapping[str, Any]], str]:
    """A benchmark's `report(result)`: `template` (`str.format` syntax) filled in with
    the result's entries by name, e.g. "{kernel_ms_1t:.1f} ms on {shape[0]} rows"."""

    def report(result: Mapping[str, Any]) -> str:
        return template.format_map(result)

    return report


def interleaved_ms(sides: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time (ms) of each side over `rounds` rounds, each round calling every
    side once in turn (after one uncounted call each): sides of a ratio see the same
    load on a shared machine."""
    for call in sides.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, call in sides.items():
            started = time.perf_counter()
            call()
            times[name].append(1000.0 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}
