"""NXmx (Eiger master + data files) reader that streams frames and names what is wrong.

Reads geometry and the pixel mask from the master file and frames, a few at a time,
through its external links to the data files. Every failure is an `NXmxError` naming
the file and the dataset path, so a beamline scientist can tell a half-written
collection from a missing field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle-LZ4 filter with HDF5)
import numpy as np

DETECTOR = "/entry/instrument/detector"
WAVELENGTH = "/entry/instrument/beam/incident_wavelength"
DATA_GROUP = "/entry/data"
_LENGTH_TO_MM = {"m": 1000.0, "metre": 1000.0, "meter": 1000.0, "mm": 1.0, "millimetre": 1.0,
                 "um": 0.001, "micron": 0.001, "micrometre": 0.001}
_WAVELENGTH_TO_ANGSTROM = {"angstrom": 1.0, "a": 1.0, "nm": 10.0, "m": 1e10}


class NXmxError(ValueError):
    """A missing, corrupt or inconsistent part of an NXmx collection."""


@dataclass(frozen=True)
class DetectorGeometry:
    """Flat detector normal to the beam: what per-image resolution needs."""

    wavelength_angstrom: float
    detector_distance_mm: float
    beam_centre_x_px: float
    beam_centre_y_px: float
    pixel_size_x_mm: float
    pixel_size_y_mm: float
    saturation_value: int
    image_shape: tuple[int, int]

    def resolution_angstrom(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d-spacing (Å) at pixel positions x, y; infinite at the beam centre."""
        dx = (np.asarray(x, dtype=np.float64) - self.beam_centre_x_px) * self.pixel_size_x_mm
        dy = (np.asarray(y, dtype=np.float64) - self.beam_centre_y_px) * self.pixel_size_y_mm
        theta = 0.5 * np.arctan2(np.hypot(dx, dy), self.detector_distance_mm)
        with np.errstate(divide="ignore"):
            return self.wavelength_angstrom / (2.0 * np.sin(theta))


@dataclass(frozen=True)
class _DataBlock:
    """One data file's frames: images first..first+count-1 of the collection."""

    path: Path
    first: int
    count: int
    dataset: h5py.Dataset


class NXmxCollection:
    """An open NXmx collection; use as a context manager. Never loads all frames."""

    def __init__(self, master_file: str | Path) -> None:
        self.master_file = Path(master_file)
        if not self.master_file.is_file():
            raise NXmxError(f"{self.master_file}: master file does not exist")
        try:
            self._master = h5py.File(self.master_file, "r")
        except OSError as error:
            raise NXmxError(f"{self.master_file}: not a readable HDF5 file ({error})") from error
        try:
            self._blocks = self._open_data_blocks()
            self.n_images = sum(block.count for block in self._blocks)
            self.geometry = self._read_geometry()
            self._valid: np.ndarray | None = None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> NXmxCollection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._master.close()

    def _field(self, path: str) -> h5py.Dataset:
        node = self._master.get(path)
        if not isinstance(node, h5py.Dataset):
            raise NXmxError(f"{self.master_file}: required field {path} is missing")
        return node

    def _scalar(self, path: str) -> float:
        try:
            value = float(np.asarray(self._field(path)[()]).reshape(-1)[0])
        except (OSError, TypeError, ValueError, IndexError) as error:
            raise NXmxError(f"{self.master_file}: {path} is not a number ({error})") from error
        if not math.isfinite(value):
            raise NXmxError(f"{self.master_file}: {path} is {value}, expected a finite number")
        return value

    def _units(self, path: str, table: dict[str, float], default: str) -> float:
        units = self._field(path).attrs.get("units", default)
        units = units.decode() if isinstance(units, bytes) else str(units)
        try:
            return table[units.strip().lower()]
        except KeyError:
            raise NXmxError(
                f"{self.master_file}: {path} has units {units!r}, expected one of "
                f"{', '.join(sorted(table))}"
            ) from None

    def _length_mm(self, path: str) -> float:
        value = self._scalar(path) * self._units(path, _LENGTH_TO_MM, "m")
        if value <= 0:
            raise NXmxError(f"{self.master_file}: {path} must be positive, got {value} mm")
        return value

    def _read_geometry(self) -> DetectorGeometry:
        wavelength = self._scalar(WAVELENGTH) * self._units(
            WAVELENGTH, _WAVELENGTH_TO_ANGSTROM, "angstrom"
        )
        return DetectorGeometry(
            wavelength_angstrom=wavelength,
            detector_distance_mm=self._length_mm(f"{DETECTOR}/detector_distance"),
            beam_centre_x_px=self._scalar(f"{DETECTOR}/beam_center_x"),
            beam_centre_y_px=self._scalar(f"{DETECTOR}/beam_center_y"),
            pixel_size_x_mm=self._length_mm(f"{DETECTOR}/x_pixel_size"),
            pixel_size_y_mm=self._length_mm(f"{DETECTOR}/y_pixel_size"),
            saturation_value=int(self._scalar(f"{DETECTOR}/saturation_value")),
            image_shape=(int(self._blocks[0].dataset.shape[1]), int(self._blocks[0].dataset.shape[2])),
        )

    def _open_data_blocks(self) -> list[_DataBlock]:
        group = self._master.get(DATA_GROUP)
        if not isinstance(group, h5py.Group):
            raise NXmxError(f"{self.master_file}: required group {DATA_GROUP} is missing")
        names = sorted(name for name in group if name.startswith("data_"))
        if not names:
            raise NXmxError(f"{self.master_file}: {DATA_GROUP} has no data_NNNNNN entries")
        blocks: list[_DataBlock] = []
        first = 1
        for name in names:
            link = group.get(name, getlink=True)
            path = self.master_file
            if isinstance(link, h5py.ExternalLink):
                path = self.master_file.parent / link.filename
                if not path.is_file():
                    raise NXmxError(
                        f"{path}: data file linked from {self.master_file}:{DATA_GROUP}/{name} "
                        "does not exist"
                    )
            try:
                dataset = group[name]
            except (KeyError, OSError) as error:
                raise NXmxError(
                    f"{path}: cannot open {DATA_GROUP}/{name} linked from {self.master_file} "
                    f"(corrupt or truncated file? {error})"
                ) from error
            if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3:
                raise NXmxError(f"{path}: {DATA_GROUP}/{name} is not a 3-D stack of frames")
            blocks.append(_DataBlock(path, first, int(dataset.shape[0]), dataset))
            first += int(dataset.shape[0])
        shapes = {block.dataset.shape[1:] for block in blocks}
        if len(shapes) != 1:
            raise NXmxError(f"{self.master_file}: data files disagree on frame shape {shapes}")
        return blocks

    @property
    def valid_pixels(self) -> np.ndarray:
        """True where a pixel may be used: NeXus pixel_mask == 0 (all pixels if absent)."""
        if self._valid is None:
            node = self._master.get(f"{DETECTOR}/pixel_mask")
            shape = self.geometry.image_shape
            if node is None:
                self._valid = np.ones(shape, dtype=bool)
            else:
                try:
                    mask = np.asarray(node[()])
                except OSError as error:
                    raise NXmxError(
                        f"{self.master_file}: cannot read {DETECTOR}/pixel_mask ({error})"
                    ) from error
                if mask.shape != shape:
                    raise NXmxError(
                        f"{self.master_file}: {DETECTOR}/pixel_mask has shape {mask.shape}, "
                        f"frames are {shape}"
                    )
                self._valid = mask == 0
        return self._valid

    def _check_range(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= self.n_images:
            raise NXmxError(
                f"{self.master_file}: images {first}..{last} requested, the collection has "
                f"images 1..{self.n_images}"
            )

    def read_frames(self, first: int, last: int) -> np.ndarray:
        """Images first..last (1-based, inclusive) as one (n, ny, nx) array."""
        self._check_range(first, last)
        ny, nx = self.geometry.image_shape
        out = np.empty((last - first + 1, ny, nx), dtype=self._blocks[0].dataset.dtype)
        for block in self._blocks:
            start = max(first, block.first)
            stop = min(last, block.first + block.count - 1)
            if start > stop:
                continue
            try:
                out[start - first : stop - first + 1] = block.dataset[
                    start - block.first : stop - block.first + 1
                ]
            except (OSError, ValueError, RuntimeError) as error:
                raise NXmxError(
                    f"{block.path}: cannot read images {start}..{stop} from /entry/data/data "
                    f"(corrupt or truncated file? {error})"
                ) from error
        return out

    def iter_chunks(
        self, first: int = 1, last: int | None = None, chunk_size: int = 10
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first image number, frames) for consecutive chunks of at most chunk_size."""
        last = self.n_images if last is None else last
        self._check_range(first, last)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        for start in range(first, last + 1, chunk_size):
            stop = min(start + chunk_size - 1, last)
            yield start, self.read_frames(start, stop)

    def data_files(self) -> list[Path]:
        """The files holding the frames (for cache keys and attachments)."""
        return [block.path for block in self._blocks]


def describe(master_file: str | Path) -> dict[str, Any]:
    """Geometry and size of a collection, for logs and the CLI."""
    with NXmxCollection(master_file) as collection:
        return {"n_images": collection.n_images, **collection.geometry.__dict__}
