"""Test-only judgements of a reconstruction's error history."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def is_decreasing(errors: Sequence[float], window: int = 5) -> bool:
    """True when the error's late mean is below its early mean (noise-tolerant)."""
    if len(errors) < 2 * window:
        return errors[-1] < errors[0]
    return float(np.mean(errors[-window:])) < float(np.mean(errors[:window]))
