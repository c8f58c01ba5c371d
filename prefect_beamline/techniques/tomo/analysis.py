"""Tomography analysis in plain numpy: centre of rotation, and what a volume is.

The centre of rotation is the detector column the rotation axis projects to. With a
projection at 0° and one at 180° the second is the first mirrored about the centre, so
cross-correlating one with the other mirrored gives it to a fraction of a pixel. Scans
without such a pair are centred by a sinogram metric: the centre whose mirrored half turn
continues the measured one into the most consistent full-turn sinogram.

scipy is imported by the functions that need it: the LIMS imports this module's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Two projections count as a 0°/180° pair when 180° apart to within this (degrees).
PAIR_TOLERANCE_DEG = 0.05
# Sub-pixel steps of the 0°/180° cross-correlation.
UPSAMPLE = 32


@dataclass(frozen=True)
class CentreEstimate:
    """Where the rotation axis projects on the detector (column, pixels, 0-based)."""

    centre: float
    method: str  # "user", "0/180 pair" or "sinogram metric"


@dataclass(frozen=True)
class ScanInfo:
    """What the flow needs to know about a scan before reconstructing it.

    `signature` (file name, size and mtime) goes into every chunk's cache key, so a
    rewritten file never gets stale cached slices.
    """

    path: str
    signature: str
    layout: str
    n_projections: int
    n_rows: int
    n_columns: int
    angles_deg: list[float]


@dataclass(frozen=True, slots=True)
class TomogramRecord:
    """One reconstructed volume: what the flow returns, the report shows and the LIMS's
    Tomogram row stores.

    Sizes in voxels: x and y across a slice, z the number of slices (detector rows).
    `centre_of_rotation` is the detector column of the rotation axis (pixels) and
    `centre_method` how it was chosen. Image paths are the PNG previews: the central
    xy slice and the xz and yz planes through the volume's centre.
    """

    volume_file: str
    size_x: int
    size_y: int
    size_z: int
    centre_of_rotation: float
    centre_method: str
    pixel_spacing_angstrom: float | None = None
    central_slice_image: str | None = None
    xz_image: str | None = None
    yz_image: str | None = None

    @property
    def shape(self) -> list[int]:
        """(z, y, x) as stored in the volume file."""
        return [self.size_z, self.size_y, self.size_x]

    @property
    def previews(self) -> dict[str, str]:
        """The previews written so far, by plane."""
        planes = {"xy": self.central_slice_image, "xz": self.xz_image, "yz": self.yz_image}
        return {plane: path for plane, path in planes.items() if path}


def summarise(
    scan: ScanInfo,
    rows: tuple[int, int],
    tomogram: TomogramRecord,
    *,
    filter_name: str,
    ring_filter: bool,
    method: str = "fbp",
) -> dict[str, Any]:
    """The numbers of summary.json, the report and the completion event.

    `rows` are the reconstructed detector rows (first, stop).
    """
    return {
        "n_projections": scan.n_projections,
        "layout": scan.layout,
        "shape": tomogram.shape,
        "slice_range": [rows[0], rows[1] - 1],
        "centre_of_rotation": tomogram.centre_of_rotation,
        "centre_method": tomogram.centre_method,
        "method": method,
        "filter_name": filter_name,
        "ring_filter": ring_filter,
        "volume_file": tomogram.volume_file,
    }


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
    from scipy import fft

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
    from scipy import fft

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
    from scipy import fft

    full = np.concatenate((sinogram, _mirrored_half_turn(sinogram, centre)), axis=0)
    magnitude = np.abs(fft.fftshift(fft.fft2(full)))
    n_rows, n_columns = full.shape
    m = np.abs(np.arange(n_rows) - n_rows // 2)[:, None]
    k = np.abs(np.arange(n_columns) - n_columns // 2)[None, :]
    outside = (m > np.pi * k) & (m > 2) & (k > 0)
    return float(magnitude[outside].mean())


def candidate_centres(n_columns: int, radius: float) -> np.ndarray:
    """Whole-pixel centres within `radius` of the detector's middle, on the detector."""
    candidates = np.arange(-radius, radius + 0.5, 1.0) + (n_columns - 1) / 2.0
    return candidates[(candidates >= 0) & (candidates <= n_columns - 1)]


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
