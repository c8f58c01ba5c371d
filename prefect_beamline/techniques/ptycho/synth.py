"""Synthetic ptychography scans with a known object and probe, for the demo and tests.

A complex object (amplitude and phase built from a resolution test pattern: a Siemens
star, bars and discs, smoothed to be band-limited), a Gaussian probe with a curved
(defocus) wavefront, a jittered raster or Fermat-spiral scan with ~70 % overlap, and
far-field intensities |FFT(P·O)|² with Poisson noise, a beamstop and dead pixels. Written
as a NeXus-style file the way a detector writer leaves it (frames in `/entry/data/data`,
one chunk per frame; positions in metres; geometry under `/entry/instrument`; see
`prefect_beamline.formats.ptycho`). Frames are generated and written one at a time.

A reconstruction is scored against the truth by its phase error (`phase_nrmse`), after
removing what ptychography cannot fix: a constant phase and a shift traded between
object and probe. The demo reports it; the tests assert on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from scipy import ndimage

from prefect_beamline.techniques.ptycho.analysis import object_grid_shape, scanned_area

_HC_EV_M = 1.239841984e-6
MASK_DEAD = 2  # NeXus pixel_mask bit 1: dead pixel
MASK_BEAMSTOP = 8  # NeXus pixel_mask bit 3: under-responding (here: behind the beamstop)

ScanPattern = Literal["raster", "spiral"]


@dataclass(frozen=True)
class SyntheticScan:
    """A written scan file and the truth it was simulated from."""

    scan_file: Path
    object_true: np.ndarray  # complex64 (ny, nx), object pixels
    probe_true: np.ndarray  # complex64 (n, n)
    positions_px: np.ndarray  # int (n_positions, 2): (row, column) of each patch's corner
    object_pixel_m: float
    wavelength_m: float
    detector_distance_m: float
    detector_pixel_m: float
    valid: np.ndarray  # bool (n, n) detector pixels that measure, detector order

    @property
    def n_positions(self) -> int:
        return int(self.positions_px.shape[0])

    def phase_nrmse(self, reconstructed_object: np.ndarray) -> float:
        """The phase error of a reconstructed object inside the scanned area."""
        region = scanned_area(self.probe_true, self.positions_px, self.object_true.shape)
        return phase_nrmse(self.object_true, reconstructed_object, region)


def resolution_pattern(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude, phase) maps in [0, 1]: a Siemens star and bars (phase), discs (both)."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cy, cx = ny / 2.0, nx / 2.0
    radius = np.hypot(yy - cy, xx - cx)
    angle = np.arctan2(yy - cy, xx - cx)
    star = ((np.sin(12 * angle) > 0) & (radius < 0.28 * min(ny, nx))).astype(np.float64)
    bars = (np.floor((xx - 0.1 * nx) / 3) % 2 == 0) & (yy > 0.72 * ny) & (yy < 0.84 * ny)
    bars &= (xx > 0.1 * nx) & (xx < 0.45 * nx)
    phase = np.maximum(star, bars.astype(np.float64))
    amplitude = np.zeros(shape)
    for _ in range(8):
        y, x = rng.uniform(0.15, 0.85, 2) * (ny, nx)
        r = rng.uniform(0.03, 0.08) * min(ny, nx)
        disc = np.hypot(yy - y, xx - x) < r
        amplitude[disc] = rng.uniform(0.4, 1.0)
        phase[disc] = np.maximum(phase[disc], 0.6)
    return ndimage.gaussian_filter(amplitude, 0.8), ndimage.gaussian_filter(phase, 0.8)


def make_probe(size: int, sigma_px: float, curvature_rad: float) -> np.ndarray:
    """Gaussian probe with a quadratic (defocus) phase: `curvature_rad` at r = 2 sigma."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    r2 = yy**2 + xx**2
    amplitude = np.exp(-r2 / (2 * sigma_px**2))
    phase = curvature_rad * r2 / (4 * sigma_px**2)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def scan_positions(
    n_positions: int, step_px: float, pattern: ScanPattern, rng: np.random.Generator
) -> np.ndarray:
    """Integer (row, column) offsets, minimum 0: a jittered raster or a Fermat spiral."""
    if pattern == "raster":
        side = int(np.ceil(np.sqrt(n_positions)))
        rows, cols = np.divmod(np.arange(n_positions), side)
        points = np.stack([rows, cols], axis=1) * step_px
        points = points + rng.uniform(-0.2, 0.2, points.shape) * step_px
    elif pattern == "spiral":
        # Fermat spiral r = c·sqrt(k), θ = k·golden angle: uniform density, no periodicity.
        k = np.arange(n_positions)
        r = step_px * 0.55 * np.sqrt(k)
        theta = k * np.pi * (3.0 - np.sqrt(5.0))
        points = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    else:
        raise ValueError(f"pattern must be 'raster' or 'spiral', got {pattern!r}")
    points = np.rint(points).astype(np.int64)
    return points - points.min(axis=0)


def write_ptycho_scan(
    folder: Path,
    *,
    name: str = "scan_1",
    n_positions: int = 100,
    pattern_size: int = 64,
    pattern: ScanPattern = "raster",
    probe_sigma_px: float = 7.0,
    step_px: float = 6.0,
    photons_per_pattern: float = 1e7,
    energy_ev: float = 6200.0,
    detector_distance_m: float = 5.0,
    detector_pixel_m: float = 75e-6,
    beamstop_radius_px: float = 1.5,
    n_dead_pixels: int = 5,
    max_phase_rad: float = 1.2,
    seed: int = 0,
) -> SyntheticScan:
    """Simulate a scan and write `<folder>/<name>.h5`; returns the file and the truth."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = pattern_size
    wavelength_m = _HC_EV_M / energy_ev
    object_pixel_m = wavelength_m * detector_distance_m / (n * detector_pixel_m)
    positions = scan_positions(n_positions, step_px, pattern, rng)
    object_shape = object_grid_shape(positions, (n, n))
    amplitude, phase = resolution_pattern(object_shape, rng)
    obj = ((1.0 - 0.5 * amplitude) * np.exp(1j * max_phase_rad * phase)).astype(np.complex64)
    probe = make_probe(n, probe_sigma_px, curvature_rad=2.5)
    probe *= np.sqrt(photons_per_pattern / np.sum(np.abs(probe) ** 2)).astype(np.float32)

    valid = _detector_mask(n, beamstop_radius_px, n_dead_pixels, rng)
    pixel_mask = np.zeros((n, n), dtype=np.uint32)
    pixel_mask[~valid] = MASK_DEAD
    pixel_mask[_radius_px(n) <= beamstop_radius_px] = MASK_BEAMSTOP

    path = folder / f"{name}.h5"
    # Motor positions: metres, about the scan centre, y up the rows, x along the columns.
    centre_px = positions.mean(axis=0)
    positions_m = (positions - centre_px) * object_pixel_m
    with h5py.File(path, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("definition", data="NXptycho")
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        frames = data.create_dataset(
            "data", shape=(len(positions), n, n), dtype=np.uint32, chunks=(1, n, n)
        )
        for index, (row, col) in enumerate(positions):
            wave = probe * obj[row : row + n, col : col + n]
            far_field = np.fft.fftshift(np.fft.fft2(wave, norm="ortho"))
            counts = rng.poisson(np.abs(far_field) ** 2).astype(np.uint32)
            counts[~valid] = 0
            frames[index] = counts
        for axis, values in (("y", positions_m[:, 0]), ("x", positions_m[:, 1])):
            dataset = data.create_dataset(axis, data=values)
            dataset.attrs["units"] = "m"
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        beam = instrument.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        beam.create_dataset("incident_wavelength", data=wavelength_m * 1e10).attrs["units"] = (
            "angstrom"
        )
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector.create_dataset("distance", data=detector_distance_m * 1e3).attrs["units"] = "mm"
        for axis in ("x", "y"):
            size = detector.create_dataset(f"{axis}_pixel_size", data=detector_pixel_m)
            size.attrs["units"] = "m"
        detector.create_dataset("pixel_mask", data=pixel_mask, compression="gzip")
    return SyntheticScan(
        scan_file=path,
        object_true=obj,
        probe_true=probe,
        positions_px=positions,
        object_pixel_m=object_pixel_m,
        wavelength_m=wavelength_m,
        detector_distance_m=detector_distance_m,
        detector_pixel_m=detector_pixel_m,
        valid=valid,
    )


def _detector_mask(
    n: int, beamstop_radius_px: float, n_dead: int, rng: np.random.Generator
) -> np.ndarray:
    """True where the detector measures: all but a central beamstop and a few dead pixels."""
    valid = _radius_px(n) > beamstop_radius_px
    valid[rng.integers(0, n, n_dead), rng.integers(0, n, n_dead)] = False
    return valid


def _radius_px(n: int) -> np.ndarray:
    """Each pixel's distance from the beam of an n x n detector-order pattern, at (n//2, n//2)."""
    return np.asarray(np.hypot(*(np.mgrid[0:n, 0:n] - n // 2)))


def register_shift(reference: np.ndarray, moving: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(dy, dx) sub-pixel shift that best aligns `moving` to `reference` inside `region`.

    Cross-correlation peak of the two complex images (windowed by `region`), refined by
    a parabola through the peak and its neighbours along each axis.
    """
    window = region.astype(np.float64)
    a = np.fft.fft2(reference * window)
    b = np.fft.fft2(moving * window)
    correlation = np.abs(np.fft.ifft2(a * np.conj(b)))
    peak = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    shift = []
    for axis, size in enumerate(correlation.shape):
        index = list(peak)
        values = []
        for step in (-1, 0, 1):
            index[axis] = (peak[axis] + step) % size
            values.append(correlation[tuple(index)])
        left, centre, right = values
        denominator = left - 2 * centre + right
        offset = 0.5 * (left - right) / denominator if denominator != 0 else 0.0
        position = peak[axis] + offset
        shift.append(position - size if position > size / 2 else position)
    return np.array(shift)


def align_to(reference: np.ndarray, moving: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`moving` shifted (sub-pixel, Fourier) and rotated by a global phase onto `reference`.

    Ptychography fixes the object only up to these: a constant phase and a shift traded
    between object and probe.
    """
    shift = register_shift(reference, moving, region)
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(moving), shift))
    overlap = np.sum((reference * np.conj(shifted))[region])
    return np.asarray(shifted * np.exp(1j * np.angle(overlap)))


def phase_nrmse(truth: np.ndarray, reconstruction: np.ndarray, region: np.ndarray) -> float:
    """RMS phase error inside `region` after alignment, over the truth's phase range."""
    aligned = align_to(truth, reconstruction, region)
    difference = np.angle(aligned * np.conj(truth))[region]
    phase = np.angle(truth)[region]
    return float(np.sqrt(np.mean(difference**2)) / (phase.max() - phase.min()))
