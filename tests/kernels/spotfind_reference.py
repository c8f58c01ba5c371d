"""Plain numpy/scipy reference of the spot finder: obviously right, slow.

Window sums by `scipy.ndimage.correlate` over the whole frame, then DIALS's
division-free dispersion test (dials/algorithms/image/threshold/local.h) evaluated on
arrays in the same order of operations as the kernel; components by `ndimage.label`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from prefect_beamline.ext.spotfind import DispersionParameters


def window_sums(
    image: np.ndarray, mask: np.ndarray, kernel_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum, sum of squares) of valid pixels over each (2k+1)² window."""
    box = np.ones((2 * kernel_size + 1, 2 * kernel_size + 1))
    valid = mask.astype(np.float64)
    values = np.where(mask, image.astype(np.float64), 0.0)
    count = ndimage.correlate(valid, box, mode="constant", cval=0.0)
    total = ndimage.correlate(values, box, mode="constant", cval=0.0)
    total_sq = ndimage.correlate(values * values, box, mode="constant", cval=0.0)
    return count, total, total_sq


def overloads(image: np.ndarray, mask: np.ndarray, max_valid: float | None) -> np.ndarray:
    """Valid pixels whose value is above max_valid (for int32 frames: or negative)."""
    if max_valid is None:
        return np.zeros(image.shape, dtype=bool)
    above = image > max_valid
    if image.dtype.kind == "i":
        above |= image < 0
    return mask & above


def reference_threshold(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    max_valid: float | None = None,
) -> np.ndarray:
    """Strong-pixel mask by DIALS's dispersion threshold; pixels above max_valid masked."""
    mask = mask & ~overloads(image, mask, max_valid)
    m, x, y = window_sums(image, mask, params.kernel_size)
    p = np.where(mask, image.astype(np.float64), 0.0)
    gain = params.gain
    with np.errstate(invalid="ignore"):
        a = m * y - x * x - gain * x * (m - 1.0)
        c = gain * x * params.sigma_background * np.sqrt(2.0 * (m - 1.0))
        b = m * p - x
        d = params.sigma_strong * np.sqrt(gain * x * m)
    background_like = (a > 0.0) & (a > c)
    strong_enough = (b > 0.0) & (b > d) & (p > params.global_threshold)
    return mask & (m >= params.min_local) & background_like & strong_enough


def reference_spots(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    min_spot_size: int = 2,
    max_spot_size: int = 1000,
    max_valid: float | None = None,
) -> dict[str, np.ndarray]:
    """Spots as 8-connected components with count-weighted centroids (+0.5 centres)."""
    strong = reference_threshold(image, mask, params, max_valid)
    labels, n = ndimage.label(strong, structure=np.ones((3, 3)))
    index = np.arange(1, n + 1)
    weights = np.where(strong, image.astype(np.float64), 0.0)
    n_pixels = ndimage.sum_labels(strong, labels, index).astype(int)
    sums = ndimage.sum_labels(weights, labels, index)
    rows, cols = np.indices(image.shape)
    sum_x = ndimage.sum_labels(weights * (cols + 0.5), labels, index)
    sum_y = ndimage.sum_labels(weights * (rows + 0.5), labels, index)
    keep = (n_pixels >= min_spot_size) & (n_pixels <= max_spot_size) & (sums > 0)
    order = np.lexsort((sum_x[keep] / sums[keep], sum_y[keep] / sums[keep]))
    return {
        "x": (sum_x[keep] / sums[keep])[order],
        "y": (sum_y[keep] / sums[keep])[order],
        "intensity": sums[keep][order],
        "n_pixels": n_pixels[keep][order],
    }
