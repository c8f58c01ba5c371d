"""Radial, equi-phase and sector averages of a power spectrum, for CTF fitting.

The typed face of the `_powerspec` kernel: checks shapes and dtypes (with
`prefect_beamline.ext.arguments`) before each call. Spectra are in rfft2 half-plane
layout, (n, n//2 + 1) float32, as `scipy.fft.rfft2` of an n x n tile gives them; radii
are in spectrum pixels, bins of width 1 centred on integers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from prefect_beamline.ext._powerspec import (
    binned_sum_kernel,
    elliptical_average_kernel,
    sector_map_kernel,
)
from prefect_beamline.ext.arguments import (
    REAL_KINDS,
    require_array,
    require_integer,
    require_number,
)


def _checked(spectrum: np.ndarray) -> np.ndarray:
    require_array("spectrum", spectrum, kinds=REAL_KINDS)
    if spectrum.ndim != 2 or spectrum.shape[1] != spectrum.shape[0] // 2 + 1:
        raise ValueError(
            f"spectrum must be an rfft2 half plane (n, n//2 + 1), got shape {spectrum.shape}"
        )
    return np.ascontiguousarray(spectrum, dtype=np.float32)


def elliptical_average(
    spectrum: np.ndarray, a: float, b: float, c: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts) per bin of r = sqrt(a kx² + 2 b kx ky + c ky²).

    a = c = 1, b = 0 is the plain radial average. `n_bins` bins of radius 0, 1, ...
    """
    checked = _checked(spectrum)
    a, b, c = (require_number(name, value) for name, value in (("a", a), ("b", b), ("c", c)))
    n_bins = require_integer("n_bins", n_bins, minimum=1)
    sums = np.zeros(n_bins, dtype=np.float64)
    counts = np.zeros(n_bins, dtype=np.float64)
    elliptical_average_kernel(checked, a, b, c, sums, counts)
    return sums, counts


def sector_average(
    spectrum: np.ndarray, n_sectors: int, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts), shape (n_sectors, n_bins): sector s spans angles
    -90° + 180° s / n_sectors .. -90° + 180° (s + 1) / n_sectors from the kx axis.

    Each pixel's (sector, radius) bin is looked up in a map made once per spectrum shape
    (`sector_map`), so an average is one pass over the spectrum.
    """
    checked = _checked(spectrum)
    n_sectors = require_integer("n_sectors", n_sectors, minimum=1)
    n_bins = require_integer("n_bins", n_bins, minimum=1)
    bins, counts = sector_map(checked.shape[0], n_sectors, n_bins)
    sums = np.zeros(n_sectors * n_bins, dtype=np.float64)
    binned_sum_kernel(checked, bins, sums)
    return sums.reshape(n_sectors, n_bins), counts.copy()


@lru_cache(maxsize=8)
def sector_map(size: int, n_sectors: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(bins, counts) of an (size, size//2 + 1) half plane: each pixel's flat index
    sector * n_bins + radius bin (int32, -1 outside every bin), and the pixels per bin
    (float64, (n_sectors, n_bins)). Cached: read only."""
    if n_sectors * n_bins >= 2**31:
        raise ValueError(f"n_sectors x n_bins must be below 2**31, got {n_sectors} x {n_bins}")
    bins = np.empty((size, size // 2 + 1), dtype=np.int32)
    sector_map_kernel(bins, n_sectors, n_bins)
    counts = np.bincount(bins[bins >= 0], minlength=n_sectors * n_bins).astype(np.float64)
    bins.flags.writeable = False
    counts.flags.writeable = False
    return bins, counts.reshape(n_sectors, n_bins)
