"""The numpy/scipy reference of the peakfinder8-style hit finder (`ext/peakfinder.py`).

Obviously right and slow: whole-frame arrays, `scipy.ndimage.label` for the connected
pixels, a Python loop over rings for the clipped statistics. Ring sums are exact
integers, so the means, sigmas and thresholds are the kernel's to the last bit and the
two must find the same peaks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from prefect_beamline.ext.peakfinder import PeakFinderParameters


def reference_rings(shape: tuple[int, int], beam_x: float, beam_y: float) -> np.ndarray:
    """floor(distance from the beam) of every pixel centre, in pixels."""
    rows, columns = np.indices(shape, dtype=np.float64)
    return np.floor(np.hypot(rows + 0.5 - beam_y, columns + 0.5 - beam_x)).astype(np.int64)


def reference_ring_statistics(
    values: np.ndarray, ring: np.ndarray, usable: np.ndarray, n_rings: int, p: PeakFinderParameters
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, threshold) per ring after p.n_iterations rounds of clipping.

    Sums are exact: counts in int64, squares split into 32-bit halves summed in uint64,
    joined as Python integers.
    """
    order = np.argsort(ring, axis=None, kind="stable")
    sorted_values = values.ravel()[order]
    sorted_ring = ring.ravel()[order]
    sorted_usable = usable.ravel()[order]
    squares = sorted_values.astype(np.uint64) ** 2
    high, low = squares >> np.uint64(32), squares & np.uint64(0xFFFFFFFF)
    bounds = np.searchsorted(sorted_ring, np.arange(n_rings + 1))
    mean = np.zeros(n_rings)
    threshold = np.zeros(n_rings)
    for iteration in range(p.n_iterations):
        use = sorted_usable.copy()
        if iteration:
            use &= sorted_values < threshold[sorted_ring]
        for r in range(n_rings):
            members = slice(bounds[r], bounds[r + 1])
            chosen = use[members]
            n = int(chosen.sum())
            if n == 0:
                mean_r, var = 0.0, 0.0
            else:
                total = int(sorted_values[members][chosen].sum())
                sum_squares = (int(high[members][chosen].sum()) << 32) + int(
                    low[members][chosen].sum()
                )
                mean_r = float(total) / float(n)
                sq = float(sum_squares >> 64) * 2.0**64 + float(sum_squares & (2**64 - 1))
                var = sq / float(n) - mean_r * mean_r
            t = mean_r + p.min_snr * (np.sqrt(var) if var > 0.0 else 0.0)
            mean[r] = mean_r
            threshold[r] = t if t > p.adc_threshold else p.adc_threshold
    return mean, threshold


def reference_find_peaks(
    frame: np.ndarray,
    valid: np.ndarray,
    beam_x: float,
    beam_y: float,
    p: PeakFinderParameters = PeakFinderParameters(),
) -> tuple[int, np.ndarray]:
    """(number found, (n, 4) array of x, y, intensity, n_pixels) in order of each peak's
    first pixel, at most p.max_peaks rows."""
    values = frame.astype(np.int64)
    usable = valid & (values >= 0) & (values < np.iinfo(frame.dtype).max)
    ring = reference_rings(frame.shape, beam_x, beam_y)
    n_rings = int(ring.max()) + 1
    mean, threshold = reference_ring_statistics(values, ring, usable, n_rings, p)
    in_range = (ring >= p.min_res_px) & (ring < p.max_res_px)
    candidate = usable & in_range & (values > threshold[ring])
    labels, n_labels = ndimage.label(candidate, structure=np.ones((3, 3)))
    window = 2 * p.local_max_radius + 1
    local_max = ndimage.maximum_filter(
        np.where(usable, values, -1), size=window, mode="constant", cval=-1
    )
    peaks = []
    for label in range(1, n_labels + 1):
        rows, columns = np.nonzero(labels == label)
        if not p.min_pix <= rows.size <= p.max_pix:
            continue
        counts = values[rows, columns]
        brightest = int(np.argmax(counts))
        if local_max[rows[brightest], columns[brightest]] > counts[brightest]:
            continue
        weight = counts - mean[ring[rows, columns]]
        total = weight.sum()
        peaks.append(
            [(weight * columns).sum() / total, (weight * rows).sum() / total, total, rows.size]
        )
    found = np.array(peaks, dtype=np.float64).reshape(-1, 4)
    return len(peaks), found[: p.max_peaks]
