"""Azimuthal integration (1-D, q or 2θ) of detector frames: pyFAI's method, Cython kernel.

The public face of the `_azimint` kernel. `AzimuthalIntegrator.build` computes once per
geometry and mask the sparse pixel-to-bin map (per pixel: its first bin and the
fractions it gives that bin and the next ones) with pixel splitting over each pixel's
bounding box in radius (pyFAI's "bbox" split: a pixel of centre c and half-width d
spreads over [c − d, c + d], d the largest centre-to-corner difference), the
solid-angle (cos³ of the incidence angle) and polarisation corrections and the bins
(as pyFAI: from the smallest pixel edge, ≥ 0, to the largest times 1 + float32 eps).
`integrate` applies it to frames: per bin, mean = Σ c·I / Σ c·norm and, with Poisson
counting statistics, sigma = √(Σ c²·I) / Σ c·norm (norm = solid angle × polarisation),
which is what pyFAI's `integrate1d(method=("bbox", "csr", "cython"))` returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prefect_beamline.ext._azimint import accumulator_copies, integrate_kernel
from prefect_beamline.ext.arguments import (
    kernel_threads,
    require_array,
    require_integer,
    require_number,
    require_shape,
)

Unit = Literal["q_nm^-1", "2th_deg"]
UNITS: tuple[str, ...] = ("q_nm^-1", "2th_deg")
SUPPORTED_DTYPES = (np.uint16, np.uint32, np.int32, np.float32)
MAX_BINS = 0xFFFF  # bin indices are stored as uint16
_EPS32 = 1.0 + float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class DetectorGeometry:
    """A flat detector normal to the beam: what the integration needs to know.

    Beam centre in pixels with pixel centres at +0.5 (NXmx's beam_center_x/y); pixel
    (row, column) centre lies at ((column + 0.5 − beam_x)·pixel_x, (row + 0.5 −
    beam_y)·pixel_y) from the beam, as pyFAI's poni1 = beam_y·pixel_y, poni2 =
    beam_x·pixel_x with no rotations.
    """

    shape: tuple[int, int]
    distance_mm: float
    beam_centre_x_px: float
    beam_centre_y_px: float
    pixel_size_x_mm: float
    pixel_size_y_mm: float
    wavelength_angstrom: float

    def __post_init__(self) -> None:
        for name in ("distance_mm", "pixel_size_x_mm", "pixel_size_y_mm", "wavelength_angstrom"):
            require_number(name, getattr(self, name), above=0.0)
        require_number("beam_centre_x_px", self.beam_centre_x_px)
        require_number("beam_centre_y_px", self.beam_centre_y_px)

    def offsets_m(self, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in metres from the beam of fractional pixel positions (index units,
        corners at integers)."""
        x = (columns - self.beam_centre_x_px) * self.pixel_size_x_mm * 1e-3
        y = (rows - self.beam_centre_y_px) * self.pixel_size_y_mm * 1e-3
        return x, y

    def radial(self, x: np.ndarray, y: np.ndarray, unit: str) -> np.ndarray:
        """2θ (radians) or q (nm⁻¹) at offsets x, y (metres): pyFAI's internal units."""
        distance_m = self.distance_mm * 1e-3
        two_theta = np.arctan2(np.sqrt(x * x + y * y), distance_m)
        if unit == "2th_deg":
            return two_theta
        return 4.0e-9 * math.pi / (self.wavelength_angstrom * 1e-10) * np.sin(two_theta / 2.0)


def pixel_positions(geometry: DetectorGeometry, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre position and bbox half-width (largest |corner − centre|) of every pixel,
    float64 (ny, nx), in pyFAI's internal unit (q nm⁻¹ or 2θ radians)."""
    ny, nx = geometry.shape
    rows = np.arange(ny, dtype=np.float64)[:, None]
    columns = np.arange(nx, dtype=np.float64)[None, :]
    centre = geometry.radial(*geometry.offsets_m(rows + 0.5, columns + 0.5), unit)
    corner_rows = np.arange(ny + 1, dtype=np.float64)[:, None]
    corner_columns = np.arange(nx + 1, dtype=np.float64)[None, :]
    corners = geometry.radial(*geometry.offsets_m(corner_rows, corner_columns), unit)
    delta = np.zeros_like(centre)
    for dr in (0, 1):
        for dc in (0, 1):
            np.maximum(delta, np.abs(corners[dr : dr + ny, dc : dc + nx] - centre), out=delta)
    return centre, delta


def corrections(
    geometry: DetectorGeometry, polarization_factor: float | None, *, solid_angle: bool = True
) -> np.ndarray:
    """Per pixel: solid angle (cos³ of the incidence angle, 1 at the beam) if `solid_angle`,
    times pyFAI's polarisation ½(1 + cos²2θ − P·cos 2χ·(1 − cos²2θ)), χ = atan2(y, x),
    if a factor P is given."""
    ny, nx = geometry.shape
    x, y = geometry.offsets_m(
        np.arange(ny, dtype=np.float64)[:, None] + 0.5,
        np.arange(nx, dtype=np.float64)[None, :] + 0.5,
    )
    distance_m = geometry.distance_mm * 1e-3
    norm = np.ones(geometry.shape)
    if solid_angle:
        norm *= (distance_m / np.sqrt(distance_m**2 + x * x + y * y)) ** 3
    if polarization_factor is not None:
        cos2_tth = np.cos(geometry.radial(x, y, "2th_deg")) ** 2
        chi = np.arctan2(y, x)
        norm *= 0.5 * (1.0 + cos2_tth - polarization_factor * np.cos(2.0 * chi) * (1.0 - cos2_tth))
    return norm


@dataclass(frozen=True)
class Profile:
    """1-D profiles of a chunk of frames: `radial` (bin centres, in `unit`), and per frame
    and bin the mean corrected intensity, its Poisson sigma and Σ c·norm (0: empty bin)."""

    unit: str
    radial: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    normalization: np.ndarray


@dataclass(frozen=True)
class AzimuthalIntegrator:
    """The precomputed pixel-to-bin map of one geometry, mask, binning and set of
    corrections, per pixel in frame (row-major) order: `first` bin (uint16) and `coefs`
    (n_pixels, span) float32 for bins first..first + span − 1 (0 past a pixel's last
    bin; all 0 for a masked pixel). `norm_sum` is Σ c·norm per bin over every pixel."""

    unit: str
    radial: np.ndarray
    first: np.ndarray
    coefs: np.ndarray
    norm: np.ndarray
    norm_sum: np.ndarray
    shape: tuple[int, int]

    @property
    def n_bins(self) -> int:
        return int(self.radial.shape[0])

    @property
    def span(self) -> int:
        """Most bins a pixel spreads over (2 when bins are wider than a pixel's bbox)."""
        return int(self.coefs.shape[1])

    @classmethod
    def build(
        cls,
        geometry: DetectorGeometry,
        valid: np.ndarray,
        n_bins: int = 1000,
        *,
        unit: str = "q_nm^-1",
        polarization_factor: float | None = 0.99,
        solid_angle: bool = True,
    ) -> AzimuthalIntegrator:
        """The map for this geometry and mask (True = valid); seconds for 16 Mpixel."""
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        n_bins = require_integer("n_bins", n_bins, minimum=1)
        if n_bins > MAX_BINS:
            raise ValueError(f"n_bins must be at most {MAX_BINS}, got {n_bins}")
        require_array("valid", valid, ndim=2, axes="(ny, nx)", dtypes=(np.bool_,))
        require_shape("valid", valid, geometry.shape, source="the geometry's")
        if polarization_factor is not None:
            require_number("polarization_factor", polarization_factor)
        centre, delta = pixel_positions(geometry, unit)
        norm = corrections(geometry, polarization_factor, solid_angle=solid_angle)
        low, high = (centre - delta).ravel(), (centre + delta).ravel()
        keep = valid.ravel()
        if not keep.any():
            raise ValueError("valid masks every pixel: nothing to integrate")
        pos_min = max(0.0, float(low[keep].min()))
        pos_max_in = max(0.0, float(high[keep].max()))
        pos_max = pos_max_in * _EPS32 if pos_max_in > 0 else pos_max_in / _EPS32
        step = (pos_max - pos_min) / n_bins
        first, coefs = _bbox_map(low, high, keep, pos_min, step, n_bins)
        radial = pos_min + (np.arange(n_bins) + 0.5) * step
        if unit == "2th_deg":
            radial = np.degrees(radial)
        norm32 = norm.ravel().astype(np.float32)
        span = coefs.shape[1]
        bins = first[:, None].astype(np.int64) + np.arange(span)
        weights = coefs.astype(np.float64) * norm32[:, None]
        norm_sum = np.bincount(bins.ravel(), weights=weights.ravel(), minlength=n_bins + span)
        return cls(unit, radial, first, coefs, norm32, norm_sum[:n_bins], geometry.shape)

    def matrix(self) -> object:
        """The same map as a scipy.sparse.csr_matrix (n_pixels, n_bins)."""
        from scipy import sparse

        n_pixels, span = self.coefs.shape
        rows = np.repeat(np.arange(n_pixels), span)
        bins = (self.first[:, None].astype(np.int64) + np.arange(span)).ravel()
        weights = self.coefs.ravel()
        kept = weights != 0
        return sparse.csr_matrix(
            (weights[kept], (rows[kept], bins[kept])), shape=(n_pixels, self.n_bins)
        )

    def integrate(self, frames: np.ndarray, *, n_threads: int | None = 1) -> Profile:
        """Profiles of one frame (ny, nx) or a chunk (n, ny, nx); pixels split over
        `n_threads` (None or 0: every core). Integer counts equal to the dtype's largest
        value (an Eiger's invalid pixel) or negative, and NaN, count as masked."""
        require_array("frames", frames, ndim=(2, 3), axes="([n,] ny, nx)", dtypes=SUPPORTED_DTYPES)
        chunk = np.ascontiguousarray(frames[None] if frames.ndim == 2 else frames)
        require_shape("frames", chunk[0], self.shape, source="the integrator's")
        n = chunk.shape[0]
        threads = kernel_threads(n_threads)
        padded = self.n_bins + self.span - 1
        partial = np.zeros((n, accumulator_copies() * threads, 2 * padded))
        removed = np.zeros((n, threads, padded))
        if chunk.dtype.kind == "f":
            lowest, overflow = -math.inf, math.inf
        else:
            lowest, overflow = 0.0, float(np.iinfo(chunk.dtype).max)
        integrate_kernel(
            chunk.reshape(n, -1),
            self.first,
            self.coefs,
            self.norm,
            lowest,
            overflow,
            partial,
            removed,
            threads,
        )
        sums = partial.sum(axis=1).reshape(n, padded, 2)[:, : self.n_bins]
        signal, variance = sums[..., 0], sums[..., 1]
        normalization = self.norm_sum[None, :] - removed.sum(axis=1)[:, : self.n_bins]
        filled = normalization > 0
        safe = np.where(filled, normalization, 1.0)
        return Profile(
            unit=self.unit,
            radial=self.radial,
            intensity=np.where(filled, signal / safe, 0.0),
            sigma=np.where(filled, np.sqrt(variance) / safe, 0.0),
            normalization=np.where(filled, normalization, 0.0),
        )


def _bbox_map(
    low: np.ndarray, high: np.ndarray, keep: np.ndarray, pos_min: float, step: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: first bin (uint16) and the (n_pixels, span) float32 coefficients of the
    bbox split, span the most bins any pixel covers."""
    indptr, indices, coefs = _bbox_matrix(low, high, keep, pos_min, step, n_bins)
    counts = np.diff(indptr)
    span = max(1, int(counts.max()))
    first = np.zeros(counts.size, dtype=np.uint16)
    covered = counts > 0
    first[covered] = indices[indptr[:-1][covered]]
    rows = np.repeat(np.arange(counts.size), counts)
    table = np.zeros((counts.size, span), dtype=np.float32)
    table[rows, np.arange(indptr[-1]) - indptr[:-1][rows]] = coefs
    return first, table


def _bbox_matrix(
    low: np.ndarray, high: np.ndarray, keep: np.ndarray, pos_min: float, step: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (indptr int64, indices uint16, coefs float32) of the bbox split, as
    pyFAI's `SplitBBoxIntegrator.calc_lut_1d` (C casts truncate toward zero)."""
    f_min = (low - pos_min) / step
    f_max = (high - pos_min) / step
    first = np.trunc(f_min).astype(np.int64)
    last = np.trunc(f_max).astype(np.int64)
    keep = keep & (last >= 0) & (first < n_bins)
    np.minimum(last, n_bins - 1, out=last)
    np.maximum(first, 0, out=first)
    counts = np.where(keep, last - first + 1, 0)
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows = np.repeat(np.arange(counts.size), counts)
    starts = indptr[:-1][rows]
    offsets = np.arange(indptr[-1]) - starts
    indices = (first[rows] + offsets).astype(np.uint16)
    split = last[rows] > first[rows]
    with np.errstate(divide="ignore"):
        inverse = 1.0 / (f_max[rows] - f_min[rows])
    coefs = np.where(split, inverse, 1.0)
    at_first = split & (offsets == 0)
    at_last = split & (indices == last[rows])
    coefs[at_first] = (inverse * ((first[rows] + 1) - f_min[rows]))[at_first]
    coefs[at_last] = (inverse * (f_max[rows] - last[rows]))[at_last]
    return indptr, indices, coefs.astype(np.float32)
