"""Tomography analysis in plain numpy: centre of rotation, reconstruction quality.

The centre of rotation is the detector column the rotation axis projects to. With a
projection at 0° and one at 180° the second is the first mirrored about the centre, so
cross-correlating one with the other mirrored gives it to a fraction of a pixel. Scans
without such a pair are centred by a sinogram metric: the centre whose mirrored half turn
continues the measured one into the most consistent full-turn sinogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft

# Two projections count as a 0°/180° pair when 180° apart to within this (degrees).
PAIR_TOLERANCE_DEG = 0.05
# Sub-pixel steps of the 0°/180° cross-correlation.
UPSAMPLE = 32


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
    computed by FFT and interpolated to 1/32 pixel), refined by a parabola.
    """
    if first.shape != opposite.shape or first.ndim != 2:
        raise ValueError(
            f"projections must be two images of one shape, got {first.shape}, {opposite.shape}"
        )
    n_columns = first.shape[1]
    # No mean subtraction: outside the sample -log(transmission) is already 0, while a
    # subtracted mean would leave a detector-wide box that pulls the peak to the middle.
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(opposite[:, ::-1], dtype=np.float64)
    size = 2 * n_columns
    # correlation[s] = sum_u a(u + s) b(u): peaks where b is a shifted by s. Evaluated
    # every 1/UPSAMPLE pixel by zero-padding the spectrum (band-limited interpolation):
    # a parabola through integer samples alone is pulled towards whole pixels.
    spectrum = np.sum(fft.rfft(a, n=size, axis=1) * np.conj(fft.rfft(b, n=size, axis=1)), axis=0)
    fine = size * UPSAMPLE
    correlation = fft.irfft(spectrum, n=fine)
    peak = int(np.argmax(correlation))
    left, right = correlation[peak - 1], correlation[(peak + 1) % fine]
    curvature = left - 2.0 * correlation[peak] + right
    offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    position = peak + offset
    if position > fine / 2:
        position -= fine
    shift = position / UPSAMPLE
    return float((shift + n_columns - 1) / 2.0)


def _mirrored_half_turn(sinogram: np.ndarray, centre: float) -> np.ndarray:
    """The sinogram of the next half turn, predicted from this one and a centre.

    p(theta + 180°, u) = p(theta, 2 centre - u): each row mirrored about the centre,
    shifted by Fourier interpolation (exact for band-limited rows, no blur).
    """
    _n_angles, n_columns = sinogram.shape
    flipped = sinogram[:, ::-1]
    shift = 2.0 * centre - (n_columns - 1)
    size = 2 * n_columns
    phase = np.exp(-2j * np.pi * fft.rfftfreq(size) * shift)
    shifted = fft.irfft(fft.rfft(flipped, n=size, axis=1) * phase, n=size, axis=1)
    return np.asarray(shifted[:, :n_columns])


def full_turn_inconsistency(sinogram: np.ndarray, centre: float) -> float:
    """How far a half-turn sinogram and its mirrored continuation fail to make one
    consistent full-turn sinogram (Vo et al., Opt. Express 22, 19078 (2014)).

    The 2-D spectrum of a consistent full-turn sinogram of a sample within the field of
    view is empty outside a double wedge, |m| <= pi |k| (m: angular frequency per turn,
    k: detector frequency in cycles per field of view); a wrong centre breaks the seam
    between the halves and spreads energy there. Returns the mean magnitude outside.
    """
    full = np.concatenate((sinogram, _mirrored_half_turn(sinogram, centre)), axis=0)
    magnitude = np.abs(fft.fftshift(fft.fft2(full)))
    n_rows, n_columns = full.shape
    m = np.abs(np.arange(n_rows) - n_rows // 2)[:, None]
    k = np.abs(np.arange(n_columns) - n_columns // 2)[None, :]
    outside = (m > np.pi * k) & (m > 2) & (k > 0)
    return float(magnitude[outside].mean())


def centre_by_sinogram_metric(
    sinogram: np.ndarray, candidates: Sequence[float] | np.ndarray
) -> float:
    """The centre, among `candidates` and then to 0.05 pixel around the best, whose
    mirrored half turn continues a half-turn sinogram (angle, column) most consistently.

    Needs projections over [0°, 180°) evenly spaced (a 0°/180° pair is not needed).
    """
    centres = np.asarray(candidates, dtype=np.float64)
    if centres.size < 3:
        raise ValueError(f"need at least 3 candidate centres, got {centres.size}")
    coarse = np.array([full_turn_inconsistency(sinogram, c) for c in centres])
    best = float(centres[int(np.argmin(coarse))])
    step = float(np.min(np.diff(np.sort(centres))))
    fine_centres = best + np.arange(-step, step + 1e-9, 0.05)
    fine = np.array([full_turn_inconsistency(sinogram, c) for c in fine_centres])
    return float(fine_centres[int(np.argmin(fine))])


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
