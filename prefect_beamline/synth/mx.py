"""Synthetic Eiger NXmx collections with known spots, for the demo, tests and benchmarks.

Files are laid out as the Dectris filewriter writes them: a `<name>_master.h5` holding the
NXmx geometry and external links to `<name>_data_NNNNNN.h5` files whose `/entry/data/data`
datasets are bitshuffle-LZ4 compressed frames. The truth (spot positions, intensities and
signal-to-noise, hot pixels, the resolution limit, a grid scan's crystal centre) is
returned so tests can score recall and precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from scipy import ndimage
from scipy.special import erf

from prefect_beamline.analysis.mx import grid_image_index
from prefect_beamline.events import GridScan

EIGER_MODULE = (514, 1030)
EIGER_GAP = (37, 10)
SATURATION_VALUE = 1_000_000
HOT_PIXEL_COUNTS = 50_000
SPOT_SIGMA_PX = (0.7, 1.2)
SNR_RANGE = (2.0, 200.0)
MIN_SPOT_SEPARATION_PX = 8.0
_PATCH = 5  # half-width of the patch a spot is rendered on


@dataclass(frozen=True)
class SyntheticSpot:
    """A Bragg spot written into one image (DIALS convention: pixel centres at +0.5)."""

    image_number: int
    x: float
    y: float
    total_counts: float
    snr: float


@dataclass(frozen=True)
class SyntheticCollection:
    """What was written, and the truth a spot finder should recover."""

    master_file: Path
    data_files: list[Path]
    n_images: int
    image_shape: tuple[int, int]
    spots: list[SyntheticSpot]
    hot_pixels: list[tuple[int, int]]
    d_min_true: float
    grid: GridScan | None
    grid_centre_true: tuple[float, float] | None
    wavelength_angstrom: float
    detector_distance_mm: float
    beam_centre_px: tuple[float, float]
    pixel_size_mm: float


def eiger_gap_mask(shape: tuple[int, int]) -> np.ndarray:
    """True on inter-module gaps: Eiger layout when modules fit, else one band each way."""
    ny, nx = shape
    gaps = np.zeros(shape, dtype=bool)
    module_y, module_x = EIGER_MODULE
    gap_y, gap_x = EIGER_GAP
    if ny > module_y + gap_y or nx > module_x + gap_x:
        for start in range(module_y, ny, module_y + gap_y):
            gaps[start : start + gap_y] = True
        for start in range(module_x, nx, module_x + gap_x):
            gaps[:, start : start + gap_x] = True
    else:
        gaps[ny // 3 : ny // 3 + 6] = True
        gaps[:, nx // 3 : nx // 3 + 4] = True
    return gaps


def _pixel_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """NeXus pixel_mask: bit 0 = gap, bit 1 = dead pixel (0 = good)."""
    mask = np.where(eiger_gap_mask(shape), np.uint32(1), np.uint32(0))
    n_dead = max(3, shape[0] * shape[1] // 20_000)
    dead = rng.integers(0, shape[0] * shape[1], n_dead)
    mask.flat[dead] |= np.uint32(2)
    return mask


def _distance_for(d_min: float, wavelength: float, radius_mm: float) -> float:
    """Detector distance (mm) that puts resolution `d_min` at `radius_mm` from the beam."""
    two_theta = 2.0 * math.asin(wavelength / (2.0 * d_min))
    return radius_mm / math.tan(two_theta)


def _radius_px(d: float, wavelength: float, distance_mm: float, pixel_mm: float) -> float:
    two_theta = 2.0 * math.asin(wavelength / (2.0 * d))
    return distance_mm * math.tan(two_theta) / pixel_mm


def _intensity_for_snr(snr: float, background_counts: float) -> float:
    """Counts I with I / sqrt(I + B) = snr."""
    s2 = snr * snr
    return 0.5 * (s2 + math.sqrt(s2 * s2 + 4.0 * s2 * background_counts))


def _render_spot(expected: np.ndarray, x: float, y: float, counts: float, sigma: float) -> None:
    """Add a pixel-integrated 2-D Gaussian of `counts` centred at (x, y) to `expected`."""
    ny, nx = expected.shape
    cx, cy = int(x), int(y)
    x0, x1 = max(cx - _PATCH, 0), min(cx + _PATCH + 1, nx)
    y0, y1 = max(cy - _PATCH, 0), min(cy + _PATCH + 1, ny)
    edges_x = np.arange(x0, x1 + 1, dtype=np.float64)
    edges_y = np.arange(y0, y1 + 1, dtype=np.float64)
    scale = math.sqrt(2.0) * sigma
    fraction_x = np.diff(0.5 * erf((edges_x - x) / scale))
    fraction_y = np.diff(0.5 * erf((edges_y - y) / scale))
    expected[y0:y1, x0:x1] += counts * np.outer(fraction_y, fraction_x)


def _spot_counts_per_image(
    n_images: int, spots_per_image: int, grid: GridScan | None, centre: tuple[float, float] | None
) -> np.ndarray:
    if grid is None or centre is None:
        return np.full(n_images, spots_per_image)
    index = grid_image_index(grid)
    yy, xx = np.mgrid[0 : grid.steps_y, 0 : grid.steps_x]
    width = max(1.0, 0.18 * max(grid.steps_x, grid.steps_y))
    strength = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * width**2))
    counts = np.zeros(n_images, dtype=int)
    counts[index.ravel()] = np.round(spots_per_image * strength).astype(int).ravel()
    return counts


def write_mx_collection(
    directory: Path,
    *,
    name: str = "xtal_1",
    n_images: int = 10,
    shape: tuple[int, int] = (514, 1030),
    images_per_data_file: int = 5,
    spots_per_image: int = 40,
    background: float = 1.0,
    d_min_true: float = 2.0,
    grid: GridScan | None = None,
    seed: int = 0,
    wavelength_angstrom: float = 0.9763,
    detector_distance_mm: float | None = None,
    pixel_size_mm: float = 0.075,
) -> SyntheticCollection:
    """Write a synthetic Eiger collection into `directory` and return its truth.

    The detector distance defaults to the one that puts `d_min_true` at 45 % of the
    detector's smaller side, so the resolution limit lies on the detector.
    Spots are placed uniformly over the area inside that radius, kept clear of masked
    pixels, image edges and each other; a grid scan (when `grid` is given) has one image
    per grid point and spot counts that peak at a hidden crystal centre.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    ny, nx = shape
    if grid is not None:
        n_images = grid.steps_x * grid.steps_y
    beam_x, beam_y = nx / 2 + 0.3, ny / 2 - 0.2
    radius_px = 0.45 * min(ny, nx)
    distance = detector_distance_mm or _distance_for(
        d_min_true, wavelength_angstrom, radius_px * pixel_size_mm
    )
    spot_radius = min(radius_px, _radius_px(d_min_true, wavelength_angstrom, distance, pixel_size_mm))

    pixel_mask = _pixel_mask(shape, rng)
    keep_clear = ndimage.binary_dilation(pixel_mask != 0, iterations=_PATCH)
    keep_clear[:_PATCH] = keep_clear[-_PATCH:] = True
    keep_clear[:, :_PATCH] = keep_clear[:, -_PATCH:] = True
    n_hot = max(2, ny * nx // 100_000)
    hot_flat = rng.choice(np.flatnonzero(~keep_clear), n_hot, replace=False)
    hot_pixels = [(int(i // nx), int(i % nx)) for i in hot_flat]

    grid_centre = None
    if grid is not None:
        grid_centre = (
            float(rng.uniform(0.3, 0.7) * (grid.steps_x - 1)),
            float(rng.uniform(0.3, 0.7) * (grid.steps_y - 1)),
        )
    counts_per_image = _spot_counts_per_image(n_images, spots_per_image, grid, grid_centre)

    stem = directory / name
    master_file = Path(f"{stem}_master.h5")
    data_files: list[Path] = []
    spots: list[SyntheticSpot] = []
    background_map = background * np.ones(shape)
    for file_index, first in enumerate(range(0, n_images, images_per_data_file), start=1):
        count = min(images_per_data_file, n_images - first)
        data_file = Path(f"{stem}_data_{file_index:06d}.h5")
        data_files.append(data_file)
        with h5py.File(data_file, "w") as handle:
            data = handle.create_dataset(
                "/entry/data/data",
                shape=(count, ny, nx),
                dtype=np.uint32,
                chunks=(1, ny, nx),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            data.attrs["image_nr_low"] = first + 1
            data.attrs["image_nr_high"] = first + count
            for offset in range(count):
                image_number = first + offset + 1
                expected = background_map.copy()
                for spot in _place_spots(
                    rng, image_number, int(counts_per_image[image_number - 1]), keep_clear,
                    (beam_x, beam_y), spot_radius, background,
                ):
                    sigma = float(rng.uniform(*SPOT_SIGMA_PX))
                    _render_spot(expected, spot.x, spot.y, spot.total_counts, sigma)
                    spots.append(spot)
                frame = rng.poisson(expected).astype(np.uint32)
                for row, col in hot_pixels:
                    frame[row, col] = HOT_PIXEL_COUNTS
                np.minimum(frame, SATURATION_VALUE, out=frame)
                frame[pixel_mask != 0] = 0
                data[offset] = frame
    _write_master(
        master_file, data_files, pixel_mask, n_images, wavelength_angstrom, distance,
        (beam_x, beam_y), pixel_size_mm,
    )
    return SyntheticCollection(
        master_file=master_file,
        data_files=data_files,
        n_images=n_images,
        image_shape=shape,
        spots=spots,
        hot_pixels=hot_pixels,
        d_min_true=d_min_true,
        grid=grid,
        grid_centre_true=grid_centre,
        wavelength_angstrom=wavelength_angstrom,
        detector_distance_mm=distance,
        beam_centre_px=(beam_x, beam_y),
        pixel_size_mm=pixel_size_mm,
    )


def _place_spots(
    rng: np.random.Generator,
    image_number: int,
    n_spots: int,
    keep_clear: np.ndarray,
    beam: tuple[float, float],
    radius_px: float,
    background: float,
) -> list[SyntheticSpot]:
    """Spots uniform over the disc of `radius_px`, clear of masks and of each other."""
    footprint_background = math.pi * (3.0 * 1.0) ** 2 * background
    placed: list[SyntheticSpot] = []
    attempts = 0
    while len(placed) < n_spots and attempts < 50 * (n_spots + 1):
        attempts += 1
        radius = radius_px * math.sqrt(rng.uniform(0.02, 1.0))
        angle = rng.uniform(0.0, 2.0 * math.pi)
        x = beam[0] + radius * math.cos(angle)
        y = beam[1] + radius * math.sin(angle)
        row, col = int(y), int(x)
        if not (0 <= row < keep_clear.shape[0] and 0 <= col < keep_clear.shape[1]):
            continue
        if keep_clear[row, col]:
            continue
        if any(math.hypot(x - s.x, y - s.y) < MIN_SPOT_SEPARATION_PX for s in placed):
            continue
        snr = float(math.exp(rng.uniform(math.log(SNR_RANGE[0]), math.log(SNR_RANGE[1]))))
        counts = _intensity_for_snr(snr, footprint_background)
        placed.append(SyntheticSpot(image_number, x, y, counts, snr))
    return placed


def _write_master(
    master_file: Path,
    data_files: list[Path],
    pixel_mask: np.ndarray,
    n_images: int,
    wavelength_angstrom: float,
    distance_mm: float,
    beam_centre_px: tuple[float, float],
    pixel_size_mm: float,
) -> None:
    """The NXmx master file: geometry, mask, and external links to the data files."""
    ny, nx = pixel_mask.shape
    with h5py.File(master_file, "w") as master:
        entry = master.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXmx"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for index, data_file in enumerate(data_files, start=1):
            data[f"data_{index:06d}"] = h5py.ExternalLink(data_file.name, "/entry/data/data")
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        beam = instrument.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        beam["incident_wavelength"] = wavelength_angstrom
        beam["incident_wavelength"].attrs["units"] = "angstrom"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        for field, value, units in (
            ("beam_center_x", beam_centre_px[0], "pixel"),
            ("beam_center_y", beam_centre_px[1], "pixel"),
            ("detector_distance", distance_mm / 1000.0, "m"),
            ("x_pixel_size", pixel_size_mm / 1000.0, "m"),
            ("y_pixel_size", pixel_size_mm / 1000.0, "m"),
            ("count_time", 0.002, "s"),
            ("sensor_thickness", 0.00045, "m"),
        ):
            detector[field] = value
            detector[field].attrs["units"] = units
        detector["saturation_value"] = np.int64(SATURATION_VALUE)
        detector.create_dataset("pixel_mask", data=pixel_mask, **hdf5plugin.Bitshuffle(cname="lz4"))
        detector["description"] = "Synthetic Dectris EIGER2"
        specific = detector.create_group("detectorSpecific")
        specific["nimages"] = np.int64(n_images)
        specific["ntrigger"] = np.int64(1)
        specific["x_pixels_in_detector"] = np.int64(nx)
        specific["y_pixels_in_detector"] = np.int64(ny)
        goniometer = entry.create_group("sample").create_group("goniometer")
        omega = goniometer.create_dataset("omega", data=0.1 * np.arange(n_images))
        omega.attrs["units"] = "deg"
        goniometer["omega_range_average"] = 0.1
