"""Radial, equi-phase and sector averages of a power spectrum, for CTF fitting.

The typed face of the `_powerspec` kernel: checks shapes and dtypes (with
`prefect_beamline.ext.arguments`) before each call. Spectra are in rfft2 half-plane
layout, (n, n//2 + 1) float32, as `scipy.fft.rfft2` of an n x n tile gives them; radii
are in spectrum pixels, bins of width 1 centred on integers.
"""

from __future__ import annotations

import numpy as np

from prefect_beamline.ext._powerspec import elliptical_average_kernel, sector_average_kernel
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
    -90° + 180° s / n_sectors .. -90° + 180° (s + 1) / n_sectors from the kx axis."""
    checked = _checked(spectrum)
    n_sectors = require_integer("n_sectors", n_sectors, minimum=1)
    n_bins = require_integer("n_bins", n_bins, minimum=1)
    sums = np.zeros((n_sectors, n_bins), dtype=np.float64)
    counts = np.zeros((n_sectors, n_bins), dtype=np.float64)
    sector_average_kernel(checked, sums, counts)
    return sums, counts
