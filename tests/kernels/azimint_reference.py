"""The plain references of the azimuthal integrator (`ext/azimint.py`).

`reference_matrix` builds the bbox-split pixel-to-bin matrix one pixel at a time with
`math`, as pyFAI's `calc_lut_1d` reads; `reference_integrate` applies a dense matrix
with numpy. Obviously right and slow: for detectors of a few thousand pixels.
"""

from __future__ import annotations

import math

import numpy as np

from prefect_beamline.ext.azimint import DetectorGeometry

EPS32 = 1.0 + float(np.finfo(np.float32).eps)


def _position(g: DetectorGeometry, row: float, column: float, unit: str) -> float:
    x = (column - g.beam_centre_x_px) * g.pixel_size_x_mm * 1e-3
    y = (row - g.beam_centre_y_px) * g.pixel_size_y_mm * 1e-3
    two_theta = math.atan2(math.sqrt(x * x + y * y), g.distance_mm * 1e-3)
    if unit == "2th_deg":
        return two_theta
    return 4.0e-9 * math.pi / (g.wavelength_angstrom * 1e-10) * math.sin(two_theta / 2.0)


def _norm(g: DetectorGeometry, row: int, column: int, polarization: float | None) -> float:
    x = (column + 0.5 - g.beam_centre_x_px) * g.pixel_size_x_mm * 1e-3
    y = (row + 0.5 - g.beam_centre_y_px) * g.pixel_size_y_mm * 1e-3
    d = g.distance_mm * 1e-3
    solid = (d / math.sqrt(d * d + x * x + y * y)) ** 3
    if polarization is None:
        return solid
    cos2 = math.cos(math.atan2(math.sqrt(x * x + y * y), d)) ** 2
    chi = math.atan2(y, x)
    return solid * 0.5 * (1.0 + cos2 - polarization * math.cos(2.0 * chi) * (1.0 - cos2))


def reference_matrix(
    g: DetectorGeometry,
    valid: np.ndarray,
    n_bins: int,
    unit: str = "q_nm^-1",
    polarization: float | None = 0.99,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense (n_pixels, n_bins) coefficients, per-pixel norm, bin centres in `unit`)."""
    ny, nx = g.shape
    spans = {}
    for row in range(ny):
        for column in range(nx):
            centre = _position(g, row + 0.5, column + 0.5, unit)
            corners = [_position(g, row + a, column + b, unit) for a in (0, 1) for b in (0, 1)]
            half = max(abs(corner - centre) for corner in corners)
            spans[row, column] = (centre - half, centre + half)
    kept = [spans[key] for key in spans if valid[key]]
    low = max(0.0, min(a for a, _ in kept))
    high_in = max(0.0, max(b for _, b in kept))
    step = (high_in * EPS32 - low) / n_bins
    matrix = np.zeros((ny * nx, n_bins))
    norm = np.zeros(ny * nx)
    for (row, column), (a, b) in spans.items():
        pixel = row * nx + column
        norm[pixel] = np.float32(_norm(g, row, column, polarization))
        if not valid[row, column]:
            continue
        f_min, f_max = (a - low) / step, (b - low) / step
        first, last = int(f_min), int(f_max)  # truncation toward zero, as a C cast
        if last < 0 or first >= n_bins:
            continue
        first, last = max(first, 0), min(last, n_bins - 1)
        if first == last:
            matrix[pixel, first] = 1.0
            continue
        inverse = 1.0 / (f_max - f_min)
        for bin_index in range(first, last + 1):
            matrix[pixel, bin_index] = inverse
        matrix[pixel, first] = inverse * ((first + 1) - f_min)
        matrix[pixel, last] = inverse * (f_max - last)
    centres = low + (np.arange(n_bins) + 0.5) * step
    return matrix.astype(np.float32), norm, np.degrees(centres) if unit == "2th_deg" else centres


def reference_integrate(
    frame: np.ndarray, matrix: np.ndarray, norm: np.ndarray, invalid_value: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sigma) per bin: Σc·I / Σc·norm and √(Σc²·I) / Σc·norm over the valid pixels
    (not NaN, not negative, not `invalid_value`); 0 where no valid pixel contributes."""
    counts = frame.ravel().astype(np.float64)
    good = ~np.isnan(counts) & (counts >= 0)
    if invalid_value is not None:
        good &= counts != invalid_value
    c = matrix.astype(np.float64)[good]
    signal = counts[good] @ c
    variance = counts[good] @ (c * c)
    normalization = norm[good] @ c
    filled = normalization > 0
    safe = np.where(filled, normalization, 1.0)
    return (
        np.where(filled, signal / safe, 0.0),
        np.where(filled, np.sqrt(variance) / safe, 0.0),
    )
