"""Timing helpers the kernel benchmarks share: best-of-N wall time and one memory pass."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

ALL_THREADS = os.cpu_count() or 1


def best_ms(function: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls, in ms: the run a shared machine disturbs least."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return 1000.0 * best


def memory_pass_ms(array: np.ndarray, repeats: int) -> float:
    """One read and one write of `array` (`numpy.copyto` into a preallocated copy)."""
    target = np.empty_like(array)
    return best_ms(lambda: np.copyto(target, array), repeats)
