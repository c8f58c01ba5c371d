"""NXmx (Eiger master + data files) reader that streams frames and names what is wrong.

Reads the geometry and the pixel mask from the master file, and frames, a few at a time,
from the data files its `/entry/data/data_NNNNNN` external links point to. Every failure
is an `NXmxError` naming the file and the dataset path, so a beamline scientist can tell
a half-written collection from a missing field or a corrupt chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle-LZ4 filter the data files need)
import numpy as np

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.reader import FileReader, open_hdf5

ENTRY = "/entry"
DATA_GROUP = "/entry/data"
DETECTOR = "/entry/instrument/detector"
WAVELENGTH = "/entry/instrument/beam/incident_wavelength"
# Where each quantity may live, preferred first: the Dectris filewriter's field, then
# the NXmx or other facilities' spelling of it.
DISTANCE_FIELDS = (
    f"{DETECTOR}/detector_distance",
    f"{DETECTOR}/distance",
    "/entry/instrument/detector_distance",
)
SATURATION_FIELDS = (
    f"{DETECTOR}/saturation_value",
    f"{DETECTOR}/detectorSpecific/countrate_correction_count_cutoff",
)
PIXEL_MASK_FIELDS = (f"{DETECTOR}/pixel_mask", f"{DETECTOR}/detectorSpecific/pixel_mask")

_LENGTH_TO_MM = {
    "m": 1000.0,
    "metre": 1000.0,
    "meter": 1000.0,
    "cm": 10.0,
    "mm": 1.0,
    "millimetre": 1.0,
    "millimeter": 1.0,
    "um": 1e-3,
    "µm": 1e-3,
    "micron": 1e-3,
    "micrometre": 1e-3,
    "micrometer": 1e-3,
}
_WAVELENGTH_TO_ANGSTROM = {
    "angstrom": 1.0,
    "å": 1.0,
    "a": 1.0,
    "nm": 10.0,
    "m": 1e10,
}
_PIXEL_UNITS = {"pixel", "pixels", "px"}
# Plausible ranges, to catch a value written in other units than its attribute says.
_PIXEL_SIZE_MM = (1e-3, 10.0)
_DISTANCE_MM = (1.0, 1e5)
_WAVELENGTH_ANGSTROM = (1e-3, 100.0)


class NXmxError(DataFileError):
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
        """d-spacing (Å) at pixel positions x, y (pixels, DIALS convention); inf at the beam.

        2θ = atan(r / D) for a flat detector normal to the beam, d = λ / (2 sin θ).
        """
        dx = (np.asarray(x, dtype=np.float64) - self.beam_centre_x_px) * self.pixel_size_x_mm
        dy = (np.asarray(y, dtype=np.float64) - self.beam_centre_y_px) * self.pixel_size_y_mm
        theta = 0.5 * np.arctan2(np.hypot(dx, dy), self.detector_distance_mm)
        with np.errstate(divide="ignore"):
            return np.asarray(self.wavelength_angstrom / (2.0 * np.sin(theta)))


@dataclass(frozen=True)
class _DataBlock:
    """One data file's frames: images first..first+count-1 of the collection."""

    link: str  # e.g. /entry/data/data_000001
    path: Path
    first: int
    count: int
    dataset: h5py.Dataset


class NXmxCollection(FileReader):
    """An open NXmx collection; use as a context manager. Never loads all frames.

    Opening checks the master's geometry fields and opens every data file (metadata
    only), so a missing or unreadable file is reported at once; frames are read on
    demand, one HDF5 chunk (= one frame, as the Eiger writes them) at a time.
    """

    def __init__(self, master_file: str | Path) -> None:
        self.master_file = Path(master_file)
        self._files: list[h5py.File] = []
        self._valid: np.ndarray | None = None
        self._master = open_hdf5(self.master_file, NXmxError, "master")
        self._files.append(self._master)
        try:
            self._blocks = self._open_data_blocks()
            self.n_images: int = sum(block.count for block in self._blocks)
            self.geometry = self._read_geometry()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the master and every data file (safe to call twice)."""
        for handle in reversed(self._files):
            handle.close()
        self._files.clear()

    @property
    def data_files(self) -> list[Path]:
        """The files holding the frames, in image order (for cache keys and attachments)."""
        return [block.path for block in self._blocks]

    # -- master-file fields ---------------------------------------------------------

    def _dataset(self, *paths: str) -> tuple[str, h5py.Dataset]:
        """The first of `paths` present as a dataset; NXmxError naming the first if none."""
        for path in paths:
            node = self._master.get(path)
            if isinstance(node, h5py.Dataset):
                return path, node
        alternatives = f" (or {', '.join(paths[1:])})" if len(paths) > 1 else ""
        raise NXmxError(f"{self.master_file}: required field {paths[0]}{alternatives} is missing")

    def _scalar(self, path: str, node: h5py.Dataset) -> float:
        try:
            value = float(np.asarray(node[()]).reshape(-1)[0])
        except (OSError, TypeError, ValueError, IndexError) as error:
            raise NXmxError(
                f"{self.master_file}: {path} is not a number, expected a scalar ({error})"
            ) from error
        if not math.isfinite(value):
            raise NXmxError(f"{self.master_file}: {path} is {value}, expected a finite number")
        return value

    def _units(self, path: str, node: h5py.Dataset) -> str | None:
        units = node.attrs.get("units")
        if units is None:
            return None
        if isinstance(units, np.ndarray):
            units = units.reshape(-1)[0]
        return (units.decode() if isinstance(units, bytes) else str(units)).strip().lower()

    def _quantity(
        self,
        paths: tuple[str, ...],
        table: dict[str, float],
        default_units: str,
        plausible: tuple[float, float],
        unit_name: str,
    ) -> float:
        """A scalar converted by its `units` attribute (Dectris's units when absent)."""
        path, node = self._dataset(*paths)
        value = self._scalar(path, node)
        units = self._units(path, node) or default_units
        if units not in table:
            raise NXmxError(
                f"{self.master_file}: {path} has units {units!r}, expected one of "
                f"{', '.join(sorted(table))}"
            )
        converted = value * table[units]
        low, high = plausible
        if not low <= converted <= high:
            raise NXmxError(
                f"{self.master_file}: {path} is {value} {units} = {converted:g} {unit_name}, "
                f"expected {low:g} to {high:g} {unit_name} (wrong units attribute?)"
            )
        return converted

    def _beam_centre_px(self, axis: str, pixel_size_mm: float) -> float:
        """Beam centre in pixels; NXmx also allows a length, converted by the pixel size."""
        path, node = self._dataset(f"{DETECTOR}/beam_center_{axis}")
        value = self._scalar(path, node)
        units = self._units(path, node)
        if units is None or units in _PIXEL_UNITS:
            return value
        if units in _LENGTH_TO_MM:
            return value * _LENGTH_TO_MM[units] / pixel_size_mm
        raise NXmxError(
            f"{self.master_file}: {path} has units {units!r}, expected pixels or a length"
        )

    def _read_geometry(self) -> DetectorGeometry:
        wavelength = self._quantity(
            (WAVELENGTH,), _WAVELENGTH_TO_ANGSTROM, "angstrom", _WAVELENGTH_ANGSTROM, "Å"
        )
        distance = self._quantity(DISTANCE_FIELDS, _LENGTH_TO_MM, "m", _DISTANCE_MM, "mm")
        pixel_x = self._quantity(
            (f"{DETECTOR}/x_pixel_size",), _LENGTH_TO_MM, "m", _PIXEL_SIZE_MM, "mm"
        )
        pixel_y = self._quantity(
            (f"{DETECTOR}/y_pixel_size",), _LENGTH_TO_MM, "m", _PIXEL_SIZE_MM, "mm"
        )
        path, node = self._dataset(*SATURATION_FIELDS)
        saturation = self._scalar(path, node)
        if saturation <= 0:
            raise NXmxError(f"{self.master_file}: {path} is {saturation}, expected > 0")
        shape = self._blocks[0].dataset.shape
        return DetectorGeometry(
            wavelength_angstrom=wavelength,
            detector_distance_mm=distance,
            beam_centre_x_px=self._beam_centre_px("x", pixel_x),
            beam_centre_y_px=self._beam_centre_px("y", pixel_y),
            pixel_size_x_mm=pixel_x,
            pixel_size_y_mm=pixel_y,
            saturation_value=int(saturation),
            image_shape=(int(shape[1]), int(shape[2])),
        )

    # -- data files -----------------------------------------------------------------

    def _open_data_blocks(self) -> list[_DataBlock]:
        group = self._master.get(DATA_GROUP)
        if not isinstance(group, h5py.Group):
            raise NXmxError(f"{self.master_file}: required group {DATA_GROUP} is missing")
        names = sorted(name for name in group if name.startswith("data_"))
        if not names:
            raise NXmxError(
                f"{self.master_file}: {DATA_GROUP} has no data_NNNNNN links to data files"
            )
        blocks: list[_DataBlock] = []
        first = 1
        for name in names:
            block = self._open_block(group, f"{DATA_GROUP}/{name}", name, first)
            if blocks and block.dataset.shape[1:] != blocks[0].dataset.shape[1:]:
                raise NXmxError(
                    f"{block.path}: {block.link} has frames of shape "
                    f"{block.dataset.shape[1:]}, {blocks[0].path} has "
                    f"{blocks[0].dataset.shape[1:]}"
                )
            if blocks and block.dataset.dtype != blocks[0].dataset.dtype:
                raise NXmxError(
                    f"{block.path}: {block.link} holds {block.dataset.dtype}, "
                    f"{blocks[0].path} holds {blocks[0].dataset.dtype}"
                )
            blocks.append(block)
            first += block.count
        return blocks

    def _open_block(self, group: h5py.Group, link_path: str, name: str, first: int) -> _DataBlock:
        """Open the dataset a data_NNNNNN entry names, in its own file when external."""
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            path = Path(link.filename)
            path = path if path.is_absolute() else self.master_file.parent / path
            if not path.is_file():
                raise NXmxError(
                    f"{path}: data file does not exist (linked from "
                    f"{self.master_file}:{link_path}, images from {first})"
                )
            try:
                handle = h5py.File(path, "r")
            except OSError as error:
                raise NXmxError(
                    f"{path}: data file is not readable HDF5, truncated or corrupt (linked "
                    f"from {self.master_file}:{link_path}, images from {first}; {error})"
                ) from error
            self._files.append(handle)
            node = handle.get(link.path)
            where = f"{path}:{link.path}"
        else:
            path = self.master_file
            try:
                node = group.get(name)
            except (OSError, KeyError) as error:
                raise NXmxError(f"{path}: cannot open {link_path} ({error})") from error
            where = f"{path}:{link_path}"
        if not isinstance(node, h5py.Dataset):
            raise NXmxError(f"{where}: missing, expected a dataset of frames for {link_path}")
        if node.ndim != 3:
            raise NXmxError(
                f"{where}: has shape {node.shape}, expected a 3-D stack of frames (n, ny, nx)"
            )
        low = node.attrs.get("image_nr_low")
        if low is not None and int(np.asarray(low).reshape(-1)[0]) != first:
            raise NXmxError(
                f"{where}: image_nr_low is {int(np.asarray(low).reshape(-1)[0])}, expected "
                f"{first} after the frames of the data files before it"
            )
        return _DataBlock(link_path, path, first, int(node.shape[0]), node)

    # -- frames ---------------------------------------------------------------------

    @property
    def valid_pixels(self) -> np.ndarray:
        """True where a pixel may be used: NeXus pixel_mask == 0 (all pixels if absent).

        Read once and returned read-only; any set bit (gap, dead, noisy, ...) rejects.
        """
        if self._valid is None:
            shape = self.geometry.image_shape
            try:
                path, node = self._dataset(*PIXEL_MASK_FIELDS)
            except NXmxError:
                valid = np.ones(shape, dtype=bool)
            else:
                try:
                    mask = np.asarray(node[()])
                except OSError as error:
                    raise NXmxError(f"{self.master_file}: cannot read {path} ({error})") from error
                if mask.shape != shape:
                    raise NXmxError(
                        f"{self.master_file}: {path} has shape {mask.shape}, expected the "
                        f"frame shape {shape}"
                    )
                valid = mask == 0
            valid.flags.writeable = False
            self._valid = valid
        return self._valid

    def _check_range(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= self.n_images:
            raise NXmxError(
                f"{self.master_file}: images {first}..{last} requested, expected a range "
                f"within 1..{self.n_images}"
            )

    def read_frames(self, first: int, last: int) -> np.ndarray:
        """Images first..last (1-based, inclusive) as one (n, ny, nx) array, native dtype.

        Frames spanning two data files are stitched. Each frame is read on its own, so a
        corrupt chunk is reported with its data file and image number.
        """
        self._check_range(first, last)
        ny, nx = self.geometry.image_shape
        out = np.empty((last - first + 1, ny, nx), dtype=self._blocks[0].dataset.dtype)
        for block in self._blocks:
            start = max(first, block.first)
            stop = min(last, block.first + block.count - 1)
            for image in range(start, stop + 1):
                try:
                    block.dataset.read_direct(out, np.s_[image - block.first], np.s_[image - first])
                except (OSError, ValueError, RuntimeError) as error:
                    raise NXmxError(
                        f"{block.path}: cannot read image {image} (frame "
                        f"{image - block.first} of its /entry/data/data): corrupt or "
                        f"truncated data file? ({error})"
                    ) from error
        return out

    def iter_chunks(
        self, first: int = 1, last: int | None = None, chunk_size: int = 10
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first image number, frames) for consecutive chunks of at most chunk_size.

        Only one chunk is in memory at a time; chunks cross data-file boundaries freely.
        """
        last = self.n_images if last is None else last
        self._check_range(first, last)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        for start in range(first, last + 1, chunk_size):
            yield start, self.read_frames(start, min(start + chunk_size - 1, last))
