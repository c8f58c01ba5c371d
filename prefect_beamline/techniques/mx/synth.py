"""Synthetic Eiger NXmx collections with known spots, for the demo, tests and benchmarks.

Files are laid out as the Dectris filewriter writes them: a `<name>_master.h5` holding the
NXmx geometry and pixel mask, with external links to `<name>_data_NNNNNN.h5` files whose
`/entry/data/data` datasets hold bitshuffle-LZ4 compressed uint32 frames. The truth (spot
positions, intensities and signal-to-noise, hot pixels, the resolution limit, a grid
scan's crystal centre) is returned so tests can score a spot finder's recall and
precision. Frames are generated and written one at a time: memory stays at one frame
whatever the number of images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from scipy import ndimage
from scipy.special import erf

from prefect_beamline.events import GridScan
from prefect_beamline.techniques.mx.analysis import grid_image_index

EIGER_MODULE_SHAPE = (514, 1030)  # (rows, columns) of one Eiger module
EIGER_GAP_PX = (37, 10)  # rows between modules stacked vertically, columns side by side
MASK_GAP = 1  # NeXus pixel_mask bit 0: gap (no sensor)
MASK_DEAD = 2  # NeXus pixel_mask bit 1: dead pixel
SATURATION_VALUE = 1_000_000
MASKED_PIXEL_VALUE = 0xFFFFFFFF  # what an Eiger writes into masked pixels of 32-bit images
HOT_PIXEL_COUNTS = 50_000
SPOT_SIGMA_PX = (0.7, 1.2)
SNR_RANGE = (2.0, 200.0)
MIN_SPOT_SEPARATION_PX = 8.0
SPOT_CLEARANCE_PX = 5  # spots keep this far from masked pixels, hot pixels and the edges
COUNT_TIME_S = 0.002
OMEGA_INCREMENT_DEG = 0.1
SENSOR_THICKNESS_M = 0.00045
_PATCH = 5  # half-width (pixels) of the patch a spot is rendered on
_HC_EV_ANGSTROM = 12398.419843

FrameCallback = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class SyntheticSpot:
    """A Bragg spot written into one image (DIALS convention: pixel centres at +0.5).

    `snr` is total_counts / sqrt(total_counts + background counts in the spot's
    3-sigma disc), the signal-to-noise an ideal integration of the spot would reach.
    """

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
    saturation_value: int
    pixel_mask: np.ndarray = field(repr=False, compare=False)


def eiger_gap_mask(shape: tuple[int, int]) -> np.ndarray:
    """True on inter-module gaps, Eiger layout where modules repeat.

    A direction too small for a second module still gets one gap band (4 rows or 3
    columns, off the middle), so every synthetic detector has masked bands both ways.
    """
    ny, nx = shape
    gaps = np.zeros(shape, dtype=bool)
    (module_y, module_x), (gap_y, gap_x) = EIGER_MODULE_SHAPE, EIGER_GAP_PX
    row_starts = list(range(module_y, ny, module_y + gap_y))
    col_starts = list(range(module_x, nx, module_x + gap_x))
    for start in row_starts or [int(0.6 * ny)]:
        gaps[start : start + (gap_y if row_starts else 4)] = True
    for start in col_starts or [int(0.6 * nx)]:
        gaps[:, start : start + (gap_x if col_starts else 3)] = True
    return gaps


def resolution_radius_px(
    d_angstrom: float, wavelength_angstrom: float, distance_mm: float, pixel_size_mm: float
) -> float:
    """Distance (pixels) from the beam centre at which a flat detector sees d-spacing d."""
    two_theta = 2.0 * math.asin(min(1.0, wavelength_angstrom / (2.0 * d_angstrom)))
    return distance_mm * math.tan(two_theta) / pixel_size_mm


def spot_counts_for_snr(snr: float, background_counts: float) -> float:
    """Counts I with I / sqrt(I + B) = snr, for B background counts under the spot."""
    s2 = snr * snr
    return 0.5 * (s2 + math.sqrt(s2 * s2 + 4.0 * s2 * background_counts))


@dataclass(frozen=True)
class _Detector:
    """Per-collection constants: mask, background, hot pixels, where spots may go."""

    pixel_mask: np.ndarray  # uint32 NeXus bit flags
    background: np.ndarray  # expected counts per pixel per frame
    hot_pixels: list[tuple[int, int]]
    spot_allowed: np.ndarray  # bool: a spot centred in this pixel stays clear of trouble
    beam: tuple[float, float]
    spot_radius_px: tuple[float, float]  # (inner, outer) radius spots are placed between


def _make_detector(
    shape: tuple[int, int],
    rng: np.random.Generator,
    background: float,
    beam: tuple[float, float],
    outer_radius_px: float,
) -> _Detector:
    ny, nx = shape
    pixel_mask = np.where(eiger_gap_mask(shape), np.uint32(MASK_GAP), np.uint32(0))
    n_dead = max(3, ny * nx // 20_000)
    pixel_mask.flat[rng.integers(0, ny * nx, n_dead)] |= np.uint32(MASK_DEAD)

    rows, cols = np.ogrid[0:ny, 0:nx]
    radius = np.hypot(cols + 0.5 - beam[0], rows + 0.5 - beam[1])
    # A gentle radial falloff (1.2x at the beam, 0.8x at the farthest corner), as air
    # and sample scatter give: a spot finder must cope with a background that varies.
    falloff = 1.2 - 0.4 * radius / radius.max()
    expected_background = background * falloff

    clearance = 2 * SPOT_CLEARANCE_PX + 1
    near_mask = ndimage.maximum_filter(pixel_mask != 0, size=clearance, mode="constant")
    edge = np.ones(shape, dtype=bool)
    edge[SPOT_CLEARANCE_PX:-SPOT_CLEARANCE_PX, SPOT_CLEARANCE_PX:-SPOT_CLEARANCE_PX] = False
    n_hot = max(2, ny * nx // 100_000)
    hot_flat = rng.choice(np.flatnonzero(~(near_mask | edge)), n_hot, replace=False)
    hot_pixels = [(int(i // nx), int(i % nx)) for i in hot_flat]
    hot = np.zeros(shape, dtype=bool)
    hot.flat[hot_flat] = True
    near_hot = ndimage.maximum_filter(hot, size=clearance + 2, mode="constant")

    inner = min(0.08 * min(ny, nx), 0.5 * outer_radius_px)
    in_ring = (radius >= inner) & (radius <= outer_radius_px)
    allowed = in_ring & ~near_mask & ~near_hot & ~edge
    return _Detector(
        pixel_mask, expected_background, hot_pixels, allowed, beam, (inner, outer_radius_px)
    )


def _grid_spot_counts(
    grid: GridScan, spots_per_image: int, centre: tuple[float, float]
) -> np.ndarray:
    """Spots per image (image order) for a crystal at `centre` (grid steps)."""
    width = max(1.0, 0.18 * max(grid.steps_x, grid.steps_y))
    yy, xx = np.mgrid[0 : grid.steps_y, 0 : grid.steps_x]
    strength = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2.0 * width**2))
    counts = np.zeros(grid.steps_x * grid.steps_y, dtype=np.int64)
    counts[grid_image_index(grid).ravel()] = np.rint(spots_per_image * strength).ravel()
    return counts


def _place_spots(
    rng: np.random.Generator, detector: _Detector, image_number: int, n_spots: int
) -> list[tuple[SyntheticSpot, float]]:
    """Up to n_spots (spot, sigma) pairs, uniform over the allowed ring, kept apart."""
    if n_spots <= 0:
        return []
    ny, nx = detector.spot_allowed.shape
    (beam_x, beam_y), outer = detector.beam, detector.spot_radius_px[1]
    low = (max(beam_x - outer, 0.0), max(beam_y - outer, 0.0))
    high = (min(beam_x + outer, float(nx)), min(beam_y + outer, float(ny)))
    centres: list[tuple[float, float]] = []
    for _ in range(20):
        candidates = rng.uniform(low, high, size=(4 * n_spots, 2))
        cols = candidates[:, 0].astype(np.intp)
        rows = candidates[:, 1].astype(np.intp)
        for x, y in candidates[detector.spot_allowed[rows, cols]]:
            if all(math.hypot(x - px, y - py) >= MIN_SPOT_SEPARATION_PX for px, py in centres):
                centres.append((float(x), float(y)))
                if len(centres) == n_spots:
                    break
        if len(centres) == n_spots:
            break
    log_snr = np.log(SNR_RANGE)
    placed = []
    for x, y in centres:
        sigma = float(rng.uniform(*SPOT_SIGMA_PX))
        snr = float(np.exp(rng.uniform(*log_snr)))
        footprint = math.pi * (3.0 * sigma) ** 2 * float(detector.background[int(y), int(x)])
        counts = spot_counts_for_snr(snr, footprint)
        placed.append((SyntheticSpot(image_number, x, y, counts, snr), sigma))
    return placed


def _spot_patch(
    x: float, y: float, counts: float, sigma: float, shape: tuple[int, int]
) -> tuple[slice, slice, np.ndarray]:
    """Expected counts of a pixel-integrated 2-D Gaussian, on a patch around (x, y)."""
    ny, nx = shape
    cx, cy = int(x), int(y)
    x0, x1 = max(cx - _PATCH, 0), min(cx + _PATCH + 1, nx)
    y0, y1 = max(cy - _PATCH, 0), min(cy + _PATCH + 1, ny)
    scale = math.sqrt(2.0) * sigma
    fraction_x = np.diff(0.5 * erf((np.arange(x0, x1 + 1) - x) / scale))
    fraction_y = np.diff(0.5 * erf((np.arange(y0, y1 + 1) - y) / scale))
    return slice(y0, y1), slice(x0, x1), counts * np.outer(fraction_y, fraction_x)


def _render_frame(
    rng: np.random.Generator, detector: _Detector, spots: list[tuple[SyntheticSpot, float]]
) -> np.ndarray:
    """One uint32 frame: Poisson background + Poisson spots, hot pixels, saturation, mask.

    The sum of independent Poisson draws is Poisson, so spots are sampled on their
    patches alone and added to the background draw.
    """
    frame = rng.poisson(detector.background)
    for spot, sigma in spots:
        rows, cols, expected = _spot_patch(spot.x, spot.y, spot.total_counts, sigma, frame.shape)
        frame[rows, cols] += rng.poisson(expected)
    for row, col in detector.hot_pixels:
        frame[row, col] = HOT_PIXEL_COUNTS
    np.minimum(frame, SATURATION_VALUE, out=frame)
    out = frame.astype(np.uint32)
    out[detector.pixel_mask != 0] = MASKED_PIXEL_VALUE
    return out


def write_mx_collection(
    directory: Path,
    *,
    name: str = "xtal_1",
    n_images: int = 10,
    shape: tuple[int, int] = EIGER_MODULE_SHAPE,
    images_per_data_file: int = 5,
    spots_per_image: int = 40,
    background: float = 1.0,
    d_min_true: float = 2.0,
    grid: GridScan | None = None,
    seed: int = 0,
    wavelength_angstrom: float = 0.9763,
    detector_distance_mm: float = 200.0,
    pixel_size_mm: float = 0.075,
    on_frame: FrameCallback | None = None,
) -> SyntheticCollection:
    """Write a synthetic Eiger collection into `directory` and return its truth.

    Spots lie uniformly over the part of the detector between a small beam-stop radius
    and the radius where the resolution is `d_min_true` (so none lies beyond it; when
    that radius is off the detector, spots cover it all), clear of masked pixels, hot
    pixels, the edges and each other. With `grid`, there is one image per grid point, in
    row-by-row (snaked) order, and spot counts follow a 2-D Gaussian around a hidden
    crystal centre. `on_frame(image_number, frame)` sees each frame as it is written
    (tests keep small ones to compare with what a reader returns).
    """
    if n_images < 1 or images_per_data_file < 1:
        raise ValueError(
            f"n_images and images_per_data_file must be at least 1, got {n_images} and "
            f"{images_per_data_file}"
        )
    ny, nx = shape
    if ny < 4 * _PATCH or nx < 4 * _PATCH:
        raise ValueError(f"shape must be at least {4 * _PATCH} pixels each way, got {shape}")
    if wavelength_angstrom >= 2.0 * d_min_true:
        raise ValueError(
            f"d_min_true {d_min_true} Å is below the diffraction limit λ/2 "
            f"({wavelength_angstrom / 2} Å)"
        )
    mask_rng, grid_rng, spot_rng, noise_rng = np.random.default_rng(seed).spawn(4)
    if grid is not None:
        n_images = grid.steps_x * grid.steps_y
    beam = (nx / 2 + 0.25, ny / 2 - 0.25)  # near the middle, off the pixel corners
    d_min_radius = resolution_radius_px(
        d_min_true, wavelength_angstrom, detector_distance_mm, pixel_size_mm
    )
    farthest_corner = math.hypot(max(beam[0], nx - beam[0]), max(beam[1], ny - beam[1]))
    detector = _make_detector(shape, mask_rng, background, beam, min(d_min_radius, farthest_corner))

    grid_centre: tuple[float, float] | None = None
    if grid is not None:
        grid_centre = (
            float(grid_rng.uniform(0.3, 0.7) * (grid.steps_x - 1)),
            float(grid_rng.uniform(0.3, 0.7) * (grid.steps_y - 1)),
        )
        spots_wanted = _grid_spot_counts(grid, spots_per_image, grid_centre)
    else:
        spots_wanted = np.full(n_images, spots_per_image, dtype=np.int64)

    directory.mkdir(parents=True, exist_ok=True)
    master_file = directory / f"{name}_master.h5"
    n_files = math.ceil(n_images / images_per_data_file)
    data_files = [directory / f"{name}_data_{index:06d}.h5" for index in range(1, n_files + 1)]
    # Like the filewriter: the master (geometry, mask, links) first, then data files.
    _write_master(
        master_file,
        data_files,
        detector,
        n_images=n_images,
        rotation=grid is None,
        wavelength_angstrom=wavelength_angstrom,
        distance_mm=detector_distance_mm,
        pixel_size_mm=pixel_size_mm,
    )
    spots: list[SyntheticSpot] = []
    for file_index, data_file in enumerate(data_files):
        first = file_index * images_per_data_file + 1
        count = min(images_per_data_file, n_images - first + 1)
        with h5py.File(data_file, "w") as handle:
            entry = handle.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            group = entry.create_group("data")
            group.attrs["NX_class"] = "NXdata"
            data = group.create_dataset(
                "data",
                shape=(count, ny, nx),
                dtype=np.uint32,
                chunks=(1, ny, nx),
                **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
            )
            data.attrs["image_nr_low"] = np.uint64(first)
            data.attrs["image_nr_high"] = np.uint64(first + count - 1)
            for offset in range(count):
                image_number = first + offset
                placed = _place_spots(
                    spot_rng, detector, image_number, int(spots_wanted[image_number - 1])
                )
                frame = _render_frame(noise_rng, detector, placed)
                data[offset] = frame
                spots.extend(spot for spot, _ in placed)
                if on_frame is not None:
                    on_frame(image_number, frame)
    return SyntheticCollection(
        master_file=master_file,
        data_files=data_files,
        n_images=n_images,
        image_shape=(ny, nx),
        spots=spots,
        hot_pixels=detector.hot_pixels,
        d_min_true=d_min_true,
        grid=grid,
        grid_centre_true=grid_centre,
        wavelength_angstrom=wavelength_angstrom,
        detector_distance_mm=detector_distance_mm,
        beam_centre_px=beam,
        pixel_size_mm=pixel_size_mm,
        saturation_value=SATURATION_VALUE,
        pixel_mask=detector.pixel_mask,
    )


def _dataset(
    group: h5py.Group, name: str, value: object, units: str | None = None, **attrs: object
) -> h5py.Dataset:
    dataset = group.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = units
    for key, attr in attrs.items():
        dataset.attrs[key] = attr
    return dataset


def _nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _write_master(
    master_file: Path,
    data_files: list[Path],
    detector: _Detector,
    *,
    n_images: int,
    rotation: bool,
    wavelength_angstrom: float,
    distance_mm: float,
    pixel_size_mm: float,
) -> None:
    """The NXmx master: Dectris's detector fields plus the NXmx geometry chain.

    Dectris fields (detector_distance, beam_center_x/y in pixels, pixel sizes in m,
    detectorSpecific/...) are what Eiger readers use; the depends_on chains (detector
    translation, module axes, omega) are what NXmx readers such as dxtbx's use.
    """
    ny, nx = detector.pixel_mask.shape
    beam_x, beam_y = detector.beam
    pixel_m = pixel_size_mm / 1000.0
    with h5py.File(master_file, "w") as master:
        entry = _nx_group(master, "entry", "NXentry")
        _dataset(entry, "definition", "NXmx")
        _dataset(entry, "start_time", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        data = _nx_group(entry, "data", "NXdata")
        for index, data_file in enumerate(data_files, start=1):
            data[f"data_{index:06d}"] = h5py.ExternalLink(data_file.name, "/entry/data/data")

        source = _nx_group(entry, "source", "NXsource")
        _dataset(source, "name", "Synthetic Light Source")
        instrument = _nx_group(entry, "instrument", "NXinstrument")
        _dataset(instrument, "name", "Synthetic beamline")
        beam = _nx_group(instrument, "beam", "NXbeam")
        _dataset(beam, "incident_wavelength", np.float32(wavelength_angstrom), "angstrom")

        det = _nx_group(instrument, "detector", "NXdetector")
        _dataset(det, "description", "Dectris EIGER2 (synthetic)")
        _dataset(det, "detector_number", "SYN-0001")
        _dataset(det, "sensor_material", "Si")
        _dataset(det, "sensor_thickness", np.float32(SENSOR_THICKNESS_M), "m")
        _dataset(det, "bit_depth_image", np.uint32(32))
        _dataset(det, "bit_depth_readout", np.uint32(16))
        _dataset(det, "count_time", np.float32(COUNT_TIME_S), "s")
        _dataset(det, "frame_time", np.float32(COUNT_TIME_S), "s")
        _dataset(det, "beam_center_x", np.float32(beam_x), "pixel")
        _dataset(det, "beam_center_y", np.float32(beam_y), "pixel")
        _dataset(det, "detector_distance", np.float32(distance_mm / 1000.0), "m")
        _dataset(det, "distance", np.float32(distance_mm / 1000.0), "m")
        _dataset(det, "x_pixel_size", np.float32(pixel_m), "m")
        _dataset(det, "y_pixel_size", np.float32(pixel_m), "m")
        _dataset(det, "saturation_value", np.int64(SATURATION_VALUE))
        _dataset(det, "underload_value", np.int64(-1))
        _dataset(det, "pixel_mask_applied", np.bool_(True))
        _dataset(det, "countrate_correction_applied", np.bool_(True))
        specific = det.create_group("detectorSpecific")
        _dataset(specific, "nimages", np.uint64(n_images))
        _dataset(specific, "ntrigger", np.uint64(1))
        _dataset(specific, "x_pixels_in_detector", np.uint32(nx))
        _dataset(specific, "y_pixels_in_detector", np.uint32(ny))
        _dataset(specific, "photon_energy", np.float32(_HC_EV_ANGSTROM / wavelength_angstrom), "eV")
        _dataset(specific, "countrate_correction_count_cutoff", np.uint32(SATURATION_VALUE))
        specific.create_dataset(
            "pixel_mask",
            data=detector.pixel_mask,
            chunks=(ny, nx),
            **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
        )
        # NXmx reads it here, older Eiger readers in detectorSpecific: one dataset, two links.
        det["pixel_mask"] = specific["pixel_mask"]

        # NXmx geometry: the detector sits `distance` down the beam (+z); pixel (0, 0)
        # is offset so that the beam hits fractional pixel (beam_x, beam_y); fast
        # pixels run along -x, slow along -y (McStas frame, as dxtbx expects).
        transformations = _nx_group(det, "transformations", "NXtransformations")
        translation = _dataset(
            transformations,
            "translation",
            np.float64(distance_mm),
            "mm",
            depends_on=".",
            transformation_type="translation",
            vector=[0.0, 0.0, 1.0],
        )
        _dataset(det, "depends_on", translation.name)
        module = _nx_group(det, "module", "NXdetector_module")
        _dataset(module, "data_origin", np.array([0, 0], dtype=np.int64))
        _dataset(module, "data_size", np.array([ny, nx], dtype=np.int64))
        _dataset(module, "data_stride", np.array([1, 1], dtype=np.int64))
        offset = _dataset(
            module,
            "module_offset",
            np.float64(0.0),
            "mm",
            depends_on=translation.name,
            transformation_type="translation",
            vector=[1.0, 0.0, 0.0],
            offset=[beam_x * pixel_size_mm, beam_y * pixel_size_mm, 0.0],
        )
        for axis, vector in (
            ("fast_pixel_direction", [-1.0, 0.0, 0.0]),
            ("slow_pixel_direction", [0.0, -1.0, 0.0]),
        ):
            _dataset(
                module,
                axis,
                np.float64(pixel_size_mm),
                "mm",
                depends_on=offset.name,
                transformation_type="translation",
                vector=vector,
                offset=[0.0, 0.0, 0.0],
            )

        sample = _nx_group(entry, "sample", "NXsample")
        _dataset(sample, "name", "synthetic crystal")
        sample_axes = _nx_group(sample, "transformations", "NXtransformations")
        increment = OMEGA_INCREMENT_DEG if rotation else 0.0
        omega = _dataset(
            sample_axes,
            "omega",
            increment * np.arange(n_images, dtype=np.float64),
            "degree",
            depends_on=".",
            transformation_type="rotation",
            vector=[-1.0, 0.0, 0.0],
        )
        _dataset(sample_axes, "omega_increment_set", np.float64(increment), "degree")
        _dataset(sample_axes, "omega_end", omega[()] + increment, "degree")
        _dataset(sample, "depends_on", omega.name)
        # Dectris's own goniometer group: the same datasets, hard-linked.
        goniometer = sample.create_group("goniometer")
        for field_name in ("omega", "omega_increment_set", "omega_end"):
            goniometer[field_name] = sample_axes[field_name]
        _dataset(goniometer, "omega_range_average", np.float64(increment), "degree")
        _dataset(goniometer, "omega_range_total", np.float64(increment * n_images), "degree")
