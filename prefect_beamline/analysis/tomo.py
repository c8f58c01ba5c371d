"""Tomography analysis in plain numpy: centre of rotation, reconstruction quality.

The centre of rotation is the detector column the rotation axis projects to. With a
projection at 0° and one at 180° the second is the first mirrored about the centre, so
cross-correlating one with the other mirrored gives it to a fraction of a pixel. Scans
without such a pair are centred by a sinogram metric: the centre whose reconstruction of
one slice has the least total variation (a wrong centre smears every edge into arcs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft

# Two projections count as a 0°/180° pair when 180° apart to within this (degrees).
PAIR_TOLERANCE_DEG = 0.05


@dataclass(frozen=True)
class CentreEstimate:
    """Where the rotation axis projects on the detector (column, pixels, 0-based)."""

    centre: float
    method: str  # "user", "0/180 pair" or "sinogram metric"


def opposite_pair(angles_deg: np.ndarray) -> tuple[int, int] | None:
    """Indices (i, j) of the two projections closest to 180° apart, if close enough."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.size < 2:
        return None
    order = np.argsort(angles)
    sorted_angles = angles[order]
    best: tuple[float, int, int] | None = None
    for position, angle in enumerate(sorted_angles):
        target = angle + 180.0
        found = int(np.searchsorted(sorted_angles, target))
        for candidate in (found - 1, found):
            if position < candidate < sorted_angles.size:
                error = abs(sorted_angles[candidate] - target)
                if best is None or error < best[0]:
                    best = (error, int(order[position]), int(order[candidate]))
    if best is None or best[0] > PAIR_TOLERANCE_DEG:
        return None
    return best[1], best[2]


def centre_from_opposite_projections(first: np.ndarray, opposite: np.ndarray) -> float:
    """Centre from two normalised projections (row, column) 180° apart.

    Mirrored, the 180° projection is the 0° one shifted by s = 2 centre - (n - 1)
    columns; the shift is the peak of their cross-correlation (summed over rows,
    computed by FFT), refined to a fraction of a pixel by a parabola through the peak.
    """
    if first.shape != opposite.shape or first.ndim != 2:
        raise ValueError(
            f"projections must be two images of one shape, got {first.shape}, {opposite.shape}"
        )
    n_columns = first.shape[1]
    a = first - first.mean(axis=1, keepdims=True)
    b = opposite[:, ::-1] - opposite.mean(axis=1, keepdims=True)
    size = 2 * n_columns
    # correlation[s] = sum_u a(u + s) b(u): peaks where b is a shifted by s.
    correlation = fft.irfft(
        np.sum(fft.rfft(a, n=size, axis=1) * np.conj(fft.rfft(b, n=size, axis=1)), axis=0),
        n=size,
    )
    shifts = np.concatenate((np.arange(0, n_columns), np.arange(-n_columns, 0)))
    peak = int(np.argmax(correlation))
    left, right = correlation[peak - 1], correlation[(peak + 1) % size]
    curvature = left - 2.0 * correlation[peak] + right
    offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    shift = shifts[peak] + offset
    return float((shift + n_columns - 1) / 2.0)


def total_variation(image: np.ndarray) -> float:
    """Sum of absolute differences between neighbouring pixels (both axes)."""
    return float(np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum())


def centre_by_sinogram_metric(
    sinogram: np.ndarray,
    angles_rad: np.ndarray,
    candidates: Sequence[float],
    *,
    n_threads: int = 1,
) -> float:
    """The candidate centre whose reconstruction of `sinogram` has least total variation,
    refined by a parabola through the best candidate and its neighbours."""
    from prefect_beamline.ext.tomo import reconstruct

    centres = np.asarray(candidates, dtype=np.float64)
    if centres.size < 3:
        raise ValueError(f"need at least 3 candidate centres, got {centres.size}")
    scores = np.array(
        [
            total_variation(
                reconstruct(sinogram[np.newaxis], angles_rad, c, n_threads=n_threads)[0]
            )
            for c in centres
        ]
    )
    best = int(np.argmin(scores))
    if 0 < best < centres.size - 1:
        left, middle, right = scores[best - 1], scores[best], scores[best + 1]
        curvature = left - 2.0 * middle + right
        if curvature > 0:
            step = centres[best + 1] - centres[best]
            return float(centres[best] + 0.5 * step * (left - right) / curvature)
    return float(centres[best])


def nrmse(reconstruction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error normalised by the truth's range (max - min), within mask."""
    if reconstruction.shape != truth.shape:
        raise ValueError(f"shapes differ: {reconstruction.shape} vs {truth.shape}")
    selected = np.ones(truth.shape, dtype=bool) if mask is None else mask
    error = reconstruction[selected].astype(np.float64) - truth[selected]
    spread = float(truth[selected].max() - truth[selected].min())
    return float(np.sqrt(np.mean(error**2)) / spread)


def circle_mask(size: int, margin: float = 0.0) -> np.ndarray:
    """Pixels of an N x N slice within radius N//2 - margin of the centre (N//2, N//2)."""
    half = size // 2
    y, x = np.mgrid[:size, :size] - half
    return np.asarray(x**2 + y**2 <= (half - margin) ** 2)


def ring_profile(image: np.ndarray) -> np.ndarray:
    """Mean of a slice over rings one pixel wide around its centre (N//2, N//2)."""
    half = image.shape[0] // 2
    y, x = np.mgrid[: image.shape[0], : image.shape[1]] - half
    radius = np.rint(np.hypot(x, y)).astype(int)
    inside = radius <= half
    sums = np.bincount(radius[inside], weights=image[inside].astype(np.float64))
    counts = np.bincount(radius[inside])
    return np.asarray(sums / np.maximum(counts, 1))
