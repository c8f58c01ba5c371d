"""Synthetic parallel-beam tomography scans with known truth (NXtomo or Data Exchange).

The sample is a 3-D Shepp-Logan phantom: ellipsoids, so each detector row sees a
different slice (features appear and vanish from row to row), and every projection is
computed exactly (the line integral through an ellipse is closed-form), averaged over
four positions across each detector pixel. The rotation axis projects to a known,
off-centre, fractional detector column; a few detector columns respond differently
from how they did when the flats were taken, which makes rings. Counts carry Poisson
noise on a flat field and dark current.

The truth returned is the phantom's attenuation (per pixel) rasterised on the grid a
reconstruction uses (N x N per row, origin on the rotation axis, 4 x 4 samples per
pixel), so tests can score a reconstruction directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

ScanLayout = Literal["nxtomo", "dxchange"]
IMAGE_KEY_PROJECTION, IMAGE_KEY_FLAT, IMAGE_KEY_DARK = 0, 1, 2

# (density, semi-axes a, b, c, centre x0, y0, z0, rotation about z in degrees), in units
# of the phantom's half-size: the 3-D Shepp-Logan of Kak & Slaney with the "modified"
# contrasts of Toft, so the inner features are visible.
SHEPP_LOGAN_3D: tuple[tuple[float, ...], ...] = (
    (1.0, 0.69, 0.92, 0.90, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.88, 0.0, -0.0184, 0.0, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, -0.25, -18.0),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, -0.25, 18.0),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.25, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, -0.25, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, -0.25, 0.0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, -0.25, 0.0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, -0.25, 0.0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, -0.25, 0.0),
)
# Detector rows sample the phantom between these heights (phantom units).
Z_RANGE = (-0.40, 0.10)
MAX_ABSORBANCE = 1.2  # the largest -log(transmission) of the scan
DARK_COUNTS = 100.0
_SUBSAMPLES = 4
_RASTER_ROWS = 64


@dataclass(frozen=True)
class SyntheticTomoScan:
    """A written scan and its truth."""

    path: Path
    layout: ScanLayout
    angles_deg: np.ndarray
    n_rows: int
    n_columns: int
    centre_true: float  # detector column of the rotation axis (pixels, 0-based)
    defective_columns: tuple[int, ...]
    truth: np.ndarray = field(repr=False)  # (row, N, N) attenuation per pixel

    @property
    def n_projections(self) -> int:
        return int(self.angles_deg.size)


def _slices_at(z: float, scale: float) -> list[tuple[float, float, float, float, float, float]]:
    """The ellipses (density, a, b, x0, y0, phi rad; pixels) the phantom has at height z."""
    ellipses = []
    for density, a, b, c, x0, y0, z0, phi in SHEPP_LOGAN_3D:
        depth = 1.0 - ((z - z0) / c) ** 2
        if depth <= 0:
            continue
        shrink = np.sqrt(depth)
        ellipses.append(
            (density, a * shrink * scale, b * shrink * scale, x0 * scale, y0 * scale,
             np.deg2rad(phi))
        )  # fmt: skip
    return ellipses


def _line_integrals(
    ellipses: list[tuple[float, float, float, float, float, float]],
    angles_rad: np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    """Exact parallel-beam projections (angle, t) of a sum of uniform ellipses."""
    cos, sin = np.cos(angles_rad)[:, None], np.sin(angles_rad)[:, None]
    total = np.zeros((angles_rad.size, t.size))
    for density, a, b, x0, y0, phi in ellipses:
        tau = t[None, :] - (x0 * cos + y0 * sin)
        relative = angles_rad[:, None] - phi
        squared = (a * np.cos(relative)) ** 2 + (b * np.sin(relative)) ** 2
        chord = np.sqrt(np.clip(squared - tau**2, 0.0, None))
        total += density * 2.0 * a * b * chord / squared
    return total


def _rasterise(
    ellipses: list[tuple[float, float, float, float, float, float]], size: int
) -> np.ndarray:
    """Mean density over each pixel (4 x 4 samples) of an N x N slice, origin at N//2;
    by bands of rows, so a 2048² slice needs no more than a few tens of MB."""
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    half = size // 2
    pixel = np.arange(size, dtype=np.float64)
    image = np.empty((size, size))
    for start in range(0, size, _RASTER_ROWS):
        rows = pixel[start : start + _RASTER_ROWS]
        x = (pixel[None, :, None] - half + offsets[None, None, :]).repeat(rows.size, axis=0)
        y = (half - rows[:, None, None] + offsets[None, None, :]).repeat(size, axis=1)
        x = np.repeat(x[..., None], _SUBSAMPLES, axis=3)
        y = np.repeat(y[..., None, :], _SUBSAMPLES, axis=2)
        band = np.zeros((rows.size, size, _SUBSAMPLES, _SUBSAMPLES))
        for density, a, b, x0, y0, phi in ellipses:
            u = (x - x0) * np.cos(phi) + (y - y0) * np.sin(phi)
            v = -(x - x0) * np.sin(phi) + (y - y0) * np.cos(phi)
            band += density * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
        image[start : start + rows.size] = band.mean(axis=(2, 3))
    return image


def _field_of_view(n_columns: int, centre: float) -> tuple[float, float]:
    """(radius, scale): the radius (pixels) about the axis at detector column `centre`
    that keeps 2 pixels clear of the detector's edges, and the pixels per phantom unit
    that make the phantom's widest extent (0.92 of its half-size) fill 97 % of it."""
    radius = min(centre, n_columns - 1 - centre) - 2.0
    return radius, 0.97 * radius / 0.92


def default_defective_columns(n_columns: int, centre: float) -> tuple[int, ...]:
    """Three columns at different distances from the axis: three rings of known radius."""
    return tuple(round(centre + f * n_columns / 2) for f in (-0.45, 0.2, 0.6))


def phantom_sinogram(
    n_columns: int, angles_deg: np.ndarray, centre: float | None = None, z: float = -0.25
) -> np.ndarray:
    """Noise-free sinogram (angle, column), float32, of the phantom's slice at height z.

    For benchmarks and kernel tests that need a realistic sinogram without a file. The
    phantom fills the detector as in `write_tomo_scan`; `centre` defaults to n // 2.
    """
    sinogram, _ = _phantom(n_columns, angles_deg, centre, z)
    return sinogram


def phantom_slice(
    n_columns: int, angles_deg: np.ndarray, centre: float | None = None, z: float = -0.25
) -> np.ndarray:
    """The truth (N x N attenuation per pixel, float32) of `phantom_sinogram` with the
    same arguments: what a reconstruction of that sinogram is scored against."""
    _, mu_per_density = _phantom(n_columns, angles_deg, centre, z)
    axis = n_columns // 2 if centre is None else centre
    ellipses = _slices_at(z, _field_of_view(n_columns, axis)[1])
    return np.asarray(_rasterise(ellipses, n_columns) * mu_per_density, dtype=np.float32)


def _phantom(
    n_columns: int, angles_deg: np.ndarray, centre: float | None, z: float
) -> tuple[np.ndarray, float]:
    """The sinogram of `phantom_sinogram` and its attenuation per unit density."""
    axis = n_columns // 2 if centre is None else centre
    _, scale = _field_of_view(n_columns, axis)
    t = np.arange(n_columns, dtype=np.float64) - axis
    ellipses = _slices_at(z, scale)
    sinogram = _line_integrals(ellipses, np.deg2rad(np.asarray(angles_deg)), t)
    mu_per_density = MAX_ABSORBANCE / max(float(sinogram.max()), 1e-12)
    return np.asarray(sinogram * mu_per_density, dtype=np.float32), mu_per_density


def write_tomo_scan(
    directory: Path,
    *,
    name: str = "tomo_1",
    n_columns: int = 128,
    n_rows: int = 8,
    n_projections: int = 180,
    centre_offset: float = 3.3,
    n_flats: int = 10,
    n_darks: int = 10,
    flat_counts: float = 20000.0,
    defective_columns: tuple[int, ...] | None = None,
    defect_gains: tuple[float, ...] = (0.95, 1.04, 0.93),
    include_180: bool = True,
    layout: ScanLayout = "nxtomo",
    seed: int = 0,
) -> SyntheticTomoScan:
    """Write `<directory>/<name>.nxs` (NXtomo) or `.h5` (Data Exchange); return the truth.

    Angles run from 0° to 180° (180° included unless `include_180` is False). The axis
    sits `centre_offset` columns right of the detector's middle ((n_columns - 1) / 2).
    NXtomo frames are ordered as a scan takes them: darks, half the flats, projections,
    the other flats, told apart by `image_key` (0 projection, 1 flat, 2 dark).
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    centre = (n_columns - 1) / 2.0 + centre_offset
    radius, scale = _field_of_view(n_columns, centre)
    if radius < 8:
        raise ValueError(f"centre_offset {centre_offset} leaves no field of view")
    angles_deg = np.linspace(0.0, 180.0, n_projections, endpoint=include_180)
    angles_rad = np.deg2rad(angles_deg)
    columns = defective_columns or default_defective_columns(n_columns, centre)
    gains = np.ones(n_columns)
    for column, gain in zip(columns, defect_gains, strict=False):
        gains[column] = gain

    heights = np.linspace(*Z_RANGE, n_rows)
    sub = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    t = (np.arange(n_columns)[:, None] + sub[None, :]).ravel() - centre
    integrals = np.empty((n_projections, n_rows, n_columns), dtype=np.float64)
    truth = np.empty((n_rows, n_columns, n_columns), dtype=np.float32)
    for row, z in enumerate(heights):
        ellipses = _slices_at(float(z), scale)
        fine = _line_integrals(ellipses, angles_rad, t)
        integrals[:, row, :] = fine.reshape(n_projections, n_columns, _SUBSAMPLES).mean(axis=2)
        truth[row] = _rasterise(ellipses, n_columns)
    mu_per_density = MAX_ABSORBANCE / max(float(integrals.max()), 1e-12)
    truth *= np.float32(mu_per_density)

    column_profile = 0.85 + 0.3 * np.exp(
        -(((np.arange(n_columns) - n_columns / 2) / n_columns) ** 2)
    )
    row_profile = 1.0 + 0.05 * np.sin(np.arange(n_rows) / 3.0)
    flat_field = flat_counts * row_profile[:, None] * column_profile[None, :]

    def counts(expected: np.ndarray) -> np.ndarray:
        frame = rng.poisson(expected) + rng.poisson(DARK_COUNTS, expected.shape)
        return np.asarray(np.clip(frame, 0, 65535), dtype=np.uint16)

    darks = [
        np.asarray(rng.poisson(DARK_COUNTS, flat_field.shape), dtype=np.uint16)
        for _ in range(n_darks)
    ]
    flats = [counts(flat_field) for _ in range(n_flats)]
    projections = (
        counts(flat_field * np.exp(-mu_per_density * integrals[index]) * gains[None, :])
        for index in range(n_projections)
    )
    suffix = ".nxs" if layout == "nxtomo" else ".h5"
    path = directory / f"{name}{suffix}"
    write = _write_nxtomo if layout == "nxtomo" else _write_dxchange
    write(path, _Frames((n_rows, n_columns), darks, flats, projections, angles_deg))
    return SyntheticTomoScan(
        path=path,
        layout=layout,
        angles_deg=angles_deg,
        n_rows=n_rows,
        n_columns=n_columns,
        centre_true=centre,
        defective_columns=tuple(columns),
        truth=truth,
    )


@dataclass(frozen=True)
class _Frames:
    """What a scan recorded, as either layout's writer takes it: (row, column) frames,
    the projections made one at a time as they are written, and their angles."""

    shape: tuple[int, int]
    darks: list[np.ndarray]
    flats: list[np.ndarray]
    projections: Iterable[np.ndarray]
    angles_deg: np.ndarray


def _frames_dataset(
    group: h5py.Group, name: str, n_frames: int, shape: tuple[int, int]
) -> h5py.Dataset:
    return group.create_dataset(
        name, shape=(n_frames, *shape), dtype=np.uint16, chunks=(1, *shape), compression="gzip"
    )


def _write_nxtomo(path: Path, scan: _Frames) -> None:
    """NXtomo as beamlines write it: one stack of frames told apart by image_key."""
    darks, flats, angles_deg = scan.darks, scan.flats, scan.angles_deg
    n_projections = angles_deg.size
    before = len(flats) // 2
    keys = (
        [IMAGE_KEY_DARK] * len(darks)
        + [IMAGE_KEY_FLAT] * before
        + [IMAGE_KEY_PROJECTION] * n_projections
        + [IMAGE_KEY_FLAT] * (len(flats) - before)
    )
    rotation = np.concatenate(
        (
            np.zeros(len(darks) + before),
            angles_deg,
            np.full(len(flats) - before, angles_deg[-1]),
        )
    )
    with h5py.File(path, "w") as handle:
        handle.attrs["default"] = "entry"
        handle.attrs["file_time"] = datetime.now(UTC).isoformat()
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        entry.create_dataset("definition", data="NXtomo")
        entry.create_dataset("title", data=path.stem)
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        data = _frames_dataset(detector, "data", len(keys), scan.shape)
        detector.create_dataset("image_key", data=np.asarray(keys, dtype=np.int32))
        for axis in ("x_pixel_size", "y_pixel_size"):
            size = detector.create_dataset(axis, data=1.0e-6)
            size.attrs["units"] = "m"
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        angle = sample.create_dataset("rotation_angle", data=rotation)
        angle.attrs["units"] = "degree"
        nxdata = entry.create_group("data")
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = data
        nxdata["rotation_angle"] = angle
        nxdata["image_key"] = detector["image_key"]
        frames = [*darks, *flats[:before]]
        for index, frame in enumerate(frames):
            data[index] = frame
        index = len(frames)
        for frame in scan.projections:
            data[index] = frame
            index += 1
        for frame in flats[before:]:
            data[index] = frame
            index += 1


def _write_dxchange(path: Path, scan: _Frames) -> None:
    """APS Data Exchange: projections, flats (data_white), darks and theta apart."""
    with h5py.File(path, "w") as handle:
        handle.attrs["implements"] = "exchange:measurement:process"
        exchange = handle.create_group("exchange")
        data = _frames_dataset(exchange, "data", scan.angles_deg.size, scan.shape)
        for index, frame in enumerate(scan.projections):
            data[index] = frame
        exchange.create_dataset("data_white", data=np.stack(scan.flats))
        exchange.create_dataset("data_dark", data=np.stack(scan.darks))
        theta = exchange.create_dataset("theta", data=scan.angles_deg)
        theta.attrs["units"] = "degrees"
