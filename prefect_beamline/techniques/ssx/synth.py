"""Synthetic serial-crystallography collections with known hits, for tests, demo and benchmarks.

A jet (or a chip) delivers crystals to a fraction of the shots: every frame has the
solvent's diffuse water ring and Poisson background, some blank frames also have ice
rings (sharp but uniform around the beam, which a ring-wise hit finder must not count
as peaks) and a few hot pixels sit on the detector; hits carry Bragg spots of one
randomly oriented lattice. Files are written as an EIGER filewriter does (NXmx master
with geometry and pixel mask, bitshuffle-LZ4 data files), so the flow reads them with
the same reader as MX data. The truth returned says which frames are hits and where
their spots are (pixel index coordinates, CXI's convention).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

MASK_GAP = 1  # NeXus pixel_mask bit 0: gap between modules
MASK_DEAD = 2  # NeXus pixel_mask bit 1: dead pixel
INVALID_PIXEL = 0xFFFFFFFF  # what an EIGER writes into masked pixels of uint32 frames
SATURATION_VALUE = 1_000_000
ICE_RINGS_ANGSTROM = (3.897, 3.669, 3.441)
WATER_RING_ANGSTROM = 3.1
SPOT_SIGMA_PX = 0.8
SPOT_CLEARANCE_PX = 4  # spots keep this far from masked pixels and the edges
_PATCH = 3  # half-width of the patch a spot is drawn on


@dataclass(frozen=True)
class SerialGeometry:
    """Detector and beam of a synthetic collection (beam centre: pixel centres at +0.5)."""

    shape: tuple[int, int] = (512, 512)
    pixel_size_mm: float = 0.075
    detector_distance_mm: float = 60.0
    wavelength_angstrom: float = 1.0
    beam_centre_px: tuple[float, float] = (257.3, 250.6)

    def radius_px(self, d_angstrom: float) -> float:
        """Distance from the beam (pixels) at which d-spacing `d_angstrom` diffracts."""
        two_theta = 2.0 * math.asin(min(1.0, self.wavelength_angstrom / (2.0 * d_angstrom)))
        return self.detector_distance_mm * math.tan(two_theta) / self.pixel_size_mm


@dataclass(frozen=True)
class SyntheticSerial:
    """What was written and the truth: hits, spots per frame (x, y, total counts)."""

    master_file: Path
    data_files: list[Path]
    geometry: SerialGeometry
    is_hit: np.ndarray
    spots: dict[int, np.ndarray]
    pixel_mask: np.ndarray = field(repr=False, compare=False)

    @property
    def n_frames(self) -> int:
        return int(self.is_hit.size)

    def valid(self) -> np.ndarray:
        return self.pixel_mask == 0


def detector_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """NeXus pixel_mask: a horizontal and a vertical module gap, a few dead pixels."""
    ny, nx = shape
    mask = np.zeros(shape, dtype=np.uint32)
    mask[int(0.7 * ny) : int(0.7 * ny) + 6, :] = MASK_GAP
    mask[:, int(0.3 * nx) : int(0.3 * nx) + 4] = MASK_GAP
    dead = rng.integers(0, ny * nx, size=max(4, ny * nx // 20_000))
    mask.ravel()[dead] = MASK_DEAD
    return mask


def radius_map(geometry: SerialGeometry) -> np.ndarray:
    """Distance of every pixel centre from the beam, pixels."""
    rows, columns = np.indices(geometry.shape, dtype=np.float64)
    beam_x, beam_y = geometry.beam_centre_px
    return np.hypot(rows + 0.5 - beam_y, columns + 0.5 - beam_x)


def background(geometry: SerialGeometry, level: float) -> np.ndarray:
    """Mean counts per pixel: flat `level` plus the solvent's broad water ring."""
    radius = radius_map(geometry)
    water = geometry.radius_px(WATER_RING_ANGSTROM)
    return level + 2.0 * level * np.exp(-0.5 * ((radius - water) / (0.12 * water)) ** 2)


def ice_rings(geometry: SerialGeometry, radius: np.ndarray, strength: float) -> np.ndarray:
    """Sharp powder rings of hexagonal ice, `strength` counts at their peak."""
    rings = np.zeros_like(radius)
    for d in ICE_RINGS_ANGSTROM:
        rings += strength * np.exp(-0.5 * ((radius - geometry.radius_px(d)) / 1.2) ** 2)
    return rings


def lattice_spots(
    rng: np.random.Generator,
    geometry: SerialGeometry,
    valid: np.ndarray,
    n_wanted: int,
    intensity_range: tuple[float, float],
) -> np.ndarray:
    """(n, 3) x, y, total counts of the spots of one randomly oriented 2-D lattice slice,
    clear of the pixels not `valid` (masked, hot), the edges and the beam stop, at least
    12 pixels apart."""
    ny, nx = geometry.shape
    bx, by = geometry.beam_centre_px
    spacing = rng.uniform(14.0, 22.0)
    angle = rng.uniform(0.0, math.pi)
    skew = rng.uniform(math.radians(70), math.radians(110))
    a = spacing * np.array([math.cos(angle), math.sin(angle)])
    b = spacing * rng.uniform(0.9, 1.2) * np.array([math.cos(angle + skew), math.sin(angle + skew)])
    reach = int(max(ny, nx) / spacing) + 2
    h, k = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1))
    offset = rng.uniform(-0.5, 0.5, size=2) * spacing
    x = bx - 0.5 + offset[0] + h.ravel() * a[0] + k.ravel() * b[0]
    y = by - 0.5 + offset[1] + h.ravel() * a[1] + k.ravel() * b[1]
    clear = SPOT_CLEARANCE_PX
    inside = (x > clear) & (x < nx - 1 - clear) & (y > clear) & (y < ny - 1 - clear)
    x, y = x[inside], y[inside]
    radius = np.hypot(x - (bx - 0.5), y - (by - 0.5))
    x, y = (
        x[(radius > 25.0) & (radius < 0.48 * min(ny, nx))],
        y[(radius > 25.0) & (radius < 0.48 * min(ny, nx))],
    )
    blocked = ~valid
    keep = [
        not blocked[
            round(yy) - clear : round(yy) + clear + 1,
            round(xx) - clear : round(xx) + clear + 1,
        ].any()
        for xx, yy in zip(x, y, strict=True)
    ]
    x, y = x[keep], y[keep]
    chosen = rng.permutation(x.size)[:n_wanted]
    low, high = np.log(intensity_range[0]), np.log(intensity_range[1])
    totals = np.exp(rng.uniform(low, high, size=chosen.size))
    return np.column_stack([x[chosen], y[chosen], totals])


def draw_spots(frame_mean: np.ndarray, spots: np.ndarray) -> None:
    """Add Gaussian spots (pixel-centre sampled, normalised on their patch) in place."""
    offsets = np.arange(-_PATCH, _PATCH + 1)
    for x, y, total in spots:
        cx, cy = round(x), round(y)
        dx = (cx + offsets)[None, :] - x
        dy = (cy + offsets)[:, None] - y
        profile = np.exp(-0.5 * (dx * dx + dy * dy) / SPOT_SIGMA_PX**2)
        frame_mean[cy - _PATCH : cy + _PATCH + 1, cx - _PATCH : cx + _PATCH + 1] += (
            total * profile / profile.sum()
        )


def synthetic_frames(
    geometry: SerialGeometry,
    n_frames: int,
    *,
    hit_fraction: float,
    seed: int,
    background_level: float = 0.6,
    spots_per_hit: tuple[int, int] = (15, 60),
    ice_fraction: float = 0.2,
) -> Iterator[tuple[np.ndarray, bool, np.ndarray, np.ndarray]]:
    """(uint32 frame, is hit, spots, pixel mask) for each frame, one at a time."""
    mask_rng, frame_rng, noise_rng = np.random.default_rng(seed).spawn(3)
    mask = detector_mask(geometry.shape, mask_rng)
    valid = mask == 0
    base = background(geometry, background_level)
    radius = radius_map(geometry)
    hot = mask_rng.integers(0, geometry.shape[0] * geometry.shape[1], size=5)
    clear_of_hot = valid.copy()
    clear_of_hot.ravel()[hot] = False  # spots keep clear of hot pixels too
    hits = frame_rng.random(n_frames) < hit_fraction
    for index in range(n_frames):
        mean = base.copy()
        spots = np.zeros((0, 3))
        if hits[index]:
            n_spots = int(frame_rng.integers(*spots_per_hit))
            spots = lattice_spots(frame_rng, geometry, clear_of_hot, n_spots, (40.0, 3000.0))
            draw_spots(mean, spots)
        elif frame_rng.random() < ice_fraction:
            mean += ice_rings(geometry, radius, strength=frame_rng.uniform(2.0, 8.0))
        frame = noise_rng.poisson(mean).astype(np.uint32)
        frame.ravel()[hot] = 5_000
        np.minimum(frame, SATURATION_VALUE, out=frame)
        frame[~valid] = INVALID_PIXEL
        yield frame, bool(hits[index]), spots, mask


def write_serial_collection(
    directory: Path,
    *,
    name: str = "chip_1",
    n_frames: int = 40,
    frames_per_data_file: int = 20,
    hit_fraction: float = 0.3,
    geometry: SerialGeometry = SerialGeometry(),
    seed: int = 0,
) -> SyntheticSerial:
    """Write a synthetic serial collection into `directory` and return its truth."""
    if n_frames < 1 or frames_per_data_file < 1:
        raise ValueError(
            f"n_frames and frames_per_data_file must be at least 1, got {n_frames} and "
            f"{frames_per_data_file}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    master_file = directory / f"{name}_master.h5"
    n_files = math.ceil(n_frames / frames_per_data_file)
    data_files = [directory / f"{name}_data_{i:06d}.h5" for i in range(1, n_files + 1)]
    frames = synthetic_frames(geometry, n_frames, hit_fraction=hit_fraction, seed=seed)
    is_hit = np.zeros(n_frames, dtype=bool)
    spots: dict[int, np.ndarray] = {}
    mask = np.zeros(geometry.shape, dtype=np.uint32)
    ny, nx = geometry.shape
    for file_index, data_file in enumerate(data_files):
        first = file_index * frames_per_data_file
        count = min(frames_per_data_file, n_frames - first)
        with h5py.File(data_file, "w") as handle:
            data = handle.create_dataset(
                "entry/data/data",
                shape=(count, ny, nx),
                dtype=np.uint32,
                chunks=(1, ny, nx),
                **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
            )
            data.attrs["image_nr_low"] = np.uint64(first + 1)
            data.attrs["image_nr_high"] = np.uint64(first + count)
            for offset in range(count):
                frame, hit, frame_spots, mask = next(frames)
                data[offset] = frame
                is_hit[first + offset] = hit
                if hit:
                    spots[first + offset + 1] = frame_spots
    write_master(master_file, data_files, geometry, mask, n_frames)
    return SyntheticSerial(master_file, data_files, geometry, is_hit, spots, mask)


def write_master(
    master_file: Path,
    data_files: list[Path],
    geometry: SerialGeometry,
    mask: np.ndarray,
    n_frames: int,
) -> None:
    """The EIGER master: the detector fields the NXmx reader needs and the data links."""
    pixel_m = geometry.pixel_size_mm / 1000.0
    with h5py.File(master_file, "w") as master:
        entry = master.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXmx"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for index, data_file in enumerate(data_files, start=1):
            data[f"data_{index:06d}"] = h5py.ExternalLink(data_file.name, "/entry/data/data")
        beam = master.create_group("entry/instrument/beam")
        beam["incident_wavelength"] = np.float32(geometry.wavelength_angstrom)
        beam["incident_wavelength"].attrs["units"] = "angstrom"
        detector = master.create_group("entry/instrument/detector")
        detector.attrs["NX_class"] = "NXdetector"
        for field_name, value, units in (
            ("beam_center_x", geometry.beam_centre_px[0], "pixel"),
            ("beam_center_y", geometry.beam_centre_px[1], "pixel"),
            ("detector_distance", geometry.detector_distance_mm / 1000.0, "m"),
            ("x_pixel_size", pixel_m, "m"),
            ("y_pixel_size", pixel_m, "m"),
        ):
            detector[field_name] = np.float64(value)
            detector[field_name].attrs["units"] = units
        detector["saturation_value"] = np.int64(SATURATION_VALUE)
        detector["description"] = "Dectris EIGER2 (synthetic serial)"
        detector.create_dataset(
            "pixel_mask",
            data=mask,
            chunks=mask.shape,
            **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
        )
        detector["detectorSpecific/nimages"] = np.uint64(n_frames)
