"""NXmx (Eiger master + data files) reader that streams frames and names what is wrong.

Reads the geometry and the pixel mask from the master file once, and frames, a few at a
time, from the data files. Masters as the field writes them:

- DECTRIS FileWriter1: `/entry/data/data_NNNNNN` external links, one per data file;
- DECTRIS FileWriter2 and Diamond's nexgen/Odin `.nxs`: one `/entry/data/data` virtual
  dataset (VDS) over the data files, resolved here into the data files themselves (so
  frames are read straight from them, and a missing data file is named, where HDF5
  would silently return zeros), or read through the VDS when its mapping interleaves;
- EIGER1 and EIGER2 field locations (the count cutoff only under
  `detectorSpecific/detectorModule_000/`, the mask under `threshold_1_channel/`), the
  wavelength from `/entry/instrument/beam`, `/entry/sample/beam` or a photon energy,
  any `image_nr_start` (0 included), and uint8/16/32 or float32 frames.

Every failure is an `NXmxError` naming the file and the dataset path, so a beamline
scientist can tell a half-written collection from a missing field or a corrupt chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle-LZ4 filter the data files need)
import numpy as np

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.reader import FileReader, open_hdf5

ENTRY = "/entry"
DATA_GROUP = "/entry/data"
DETECTOR = "/entry/instrument/detector"
# NXmx's place, then the older NXmx place (NXbeam in NXsample).
WAVELENGTH_FIELDS = (
    "/entry/instrument/beam/incident_wavelength",
    "/entry/sample/beam/incident_wavelength",
)
# When no wavelength is written: the photon energy (NXbeam, then DECTRIS's, in eV).
ENERGY_FIELDS = (
    "/entry/instrument/beam/incident_energy",
    "/entry/sample/beam/incident_energy",
    f"{DETECTOR}/detectorSpecific/photon_energy",
)
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
    # EIGER1 writes the cutoff only per module.
    f"{DETECTOR}/detectorSpecific/detectorModule_000/countrate_correction_count_cutoff",
)
PIXEL_MASK_FIELDS = (
    f"{DETECTOR}/pixel_mask",
    f"{DETECTOR}/detectorSpecific/pixel_mask",
    # FileWriter2 keeps one mask per energy threshold; the first is the counting one.
    f"{DETECTOR}/threshold_1_channel/pixel_mask",
    f"{DETECTOR}/detectorSpecific/threshold_1_channel/pixel_mask",
)
# Frame types the spot finder takes as they are, and the ones widened on reading.
KERNEL_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int32), np.dtype(np.float32))
WIDENED_DTYPES: dict[np.dtype, np.dtype] = {
    np.dtype(np.uint8): np.dtype(np.uint16),
    np.dtype(np.int16): np.dtype(np.int32),
}

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
_ENERGY_TO_KEV = {"ev": 1e-3, "kev": 1.0, "j": 1.0 / 1.602176634e-16}
_HC_KEV_ANGSTROM = 12.398419843320026
_PIXEL_UNITS = {"pixel", "pixels", "px"}
# Plausible ranges, to catch a value written in other units than its attribute says.
_PIXEL_SIZE_MM = (1e-3, 10.0)
_DISTANCE_MM = (1.0, 1e5)
_WAVELENGTH_ANGSTROM = (1e-3, 100.0)
_ENERGY_KEV = (_HC_KEV_ANGSTROM / 100.0, _HC_KEV_ANGSTROM / 1e-3)


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
    """Images first..first+count-1 of the collection: frames offset..offset+count-1 of
    one dataset (a data file's, or the VDS itself when its mapping interleaves)."""

    link: str  # e.g. /entry/data/data_000001
    path: Path
    first: int
    count: int
    dataset: h5py.Dataset
    offset: int = 0


def max_valid_count(saturation_value: float, stored_dtype: np.dtype) -> float:
    """The largest count a pixel may hold and still be used: at most `saturation_value`
    and, for integer frames, below the overflow value an Eiger writes into an overflowed
    or defective pixel (2^n - 1 of the stored type). Anything above is masked, image by
    image, and counted as an overload; the offline chunks and the live path share it."""
    limit = float(saturation_value)
    if stored_dtype.kind in "iu":
        limit = min(limit, float(np.iinfo(stored_dtype).max - 1))
    return limit


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
        # The detector's number of image 1 (its image_nr_start; 1 unless told otherwise).
        self.image_nr_start = 1
        self._master = open_hdf5(self.master_file, NXmxError, "master")
        self._files.append(self._master)
        try:
            self._blocks = self._open_data_blocks()
            self.n_images: int = sum(block.count for block in self._blocks)
            self.stored_dtype = self._check_dtype()
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

    def _find(self, *paths: str) -> tuple[str, h5py.Dataset] | None:
        """The first of `paths` present as a dataset, else None."""
        for path in paths:
            node = self._master.get(path)
            if isinstance(node, h5py.Dataset):
                return path, node
        return None

    def _dataset(self, *paths: str) -> tuple[str, h5py.Dataset]:
        """The first of `paths` present as a dataset; NXmxError naming the first if none."""
        found = self._find(*paths)
        if found is not None:
            return found
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
        return self._converted(path, node, table, default_units, plausible, unit_name)

    def _converted(
        self,
        path: str,
        node: h5py.Dataset,
        table: dict[str, float],
        default_units: str,
        plausible: tuple[float, float],
        unit_name: str,
    ) -> float:
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

    def _wavelength_angstrom(self) -> float:
        """The wavelength where NXmx (or older NXmx) puts it, else from the photon energy."""
        found = self._find(*WAVELENGTH_FIELDS)
        if found is not None:
            return self._converted(
                *found, _WAVELENGTH_TO_ANGSTROM, "angstrom", _WAVELENGTH_ANGSTROM, "Å"
            )
        found = self._find(*ENERGY_FIELDS)
        if found is None:
            raise NXmxError(
                f"{self.master_file}: required field {WAVELENGTH_FIELDS[0]} (or "
                f"{', '.join(WAVELENGTH_FIELDS[1:] + ENERGY_FIELDS)}) is missing"
            )
        return _HC_KEV_ANGSTROM / self._converted(*found, _ENERGY_TO_KEV, "ev", _ENERGY_KEV, "keV")

    def _read_geometry(self) -> DetectorGeometry:
        wavelength = self._wavelength_angstrom()
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
        if "data" in group:
            blocks = self._virtual_blocks(group)
        else:
            names = sorted(name for name in group if name.startswith("data_"))
            if not names:
                raise NXmxError(
                    f"{self.master_file}: {DATA_GROUP} has neither a data dataset (VDS) "
                    "nor data_NNNNNN links to data files"
                )
            blocks = []
            for name in names:
                first = 1 + sum(block.count for block in blocks)
                blocks.append(self._open_block(group, f"{DATA_GROUP}/{name}", name, first))
        for block in blocks[1:]:
            if block.dataset.shape[1:] != blocks[0].dataset.shape[1:]:
                raise NXmxError(
                    f"{block.path}: {block.link} has frames of shape "
                    f"{block.dataset.shape[1:]}, {blocks[0].path} has "
                    f"{blocks[0].dataset.shape[1:]}"
                )
            if block.dataset.dtype != blocks[0].dataset.dtype:
                raise NXmxError(
                    f"{block.path}: {block.link} holds {block.dataset.dtype}, "
                    f"{blocks[0].path} holds {blocks[0].dataset.dtype}"
                )
        return blocks

    def _open_data_file(self, path: Path, link_path: str, first: int) -> h5py.File:
        """A data file opened read-only (closed with the collection), else NXmxError."""
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
        return handle

    def _frames_dataset(self, node: object, where: str, link_path: str) -> h5py.Dataset:
        if not isinstance(node, h5py.Dataset):
            raise NXmxError(f"{where}: missing, expected a dataset of frames for {link_path}")
        if node.ndim != 3:
            raise NXmxError(
                f"{where}: has shape {node.shape}, expected a 3-D stack of frames (n, ny, nx)"
            )
        return node

    def _virtual_blocks(self, group: h5py.Group) -> list[_DataBlock]:
        """Blocks of `/entry/data/data`: a VDS (FileWriter2, nexgen/Odin) or a dataset.

        A VDS whose sources are whole consecutive frame ranges becomes one block per
        source, read straight from its data file; any other mapping (Odin's interleaved
        writers) is read through the VDS, after checking that every source file exists.
        """
        link_path = f"{DATA_GROUP}/data"
        link = group.get("data", getlink=True)
        if isinstance(link, h5py.ExternalLink):
            path = self._relative(link.filename)
            handle = self._open_data_file(path, link_path, 1)
            dataset = self._frames_dataset(handle.get(link.path), f"{path}:{link.path}", link_path)
            return [_DataBlock(link_path, path, 1, int(dataset.shape[0]), dataset)]
        try:
            node = group.get("data")
        except (OSError, KeyError) as error:
            raise NXmxError(f"{self.master_file}: cannot open {link_path} ({error})") from error
        dataset = self._frames_dataset(node, f"{self.master_file}:{link_path}", link_path)
        if not dataset.is_virtual:
            return [_DataBlock(link_path, self.master_file, 1, int(dataset.shape[0]), dataset)]
        blocks: list[_DataBlock] = []
        for source in sorted(
            dataset.virtual_sources(), key=lambda s: s.vspace.get_select_bounds()[0][0]
        ):
            (low, *_), (high, *_) = source.vspace.get_select_bounds()
            first = int(low) + 1
            path = self._relative(source.file_name)
            block = self._source_block(source, path, link_path, first, int(high) - int(low) + 1)
            if block is None:  # not a plain frame range: read through the VDS
                for other in dataset.virtual_sources():
                    self._relative(other.file_name, must_exist_for=link_path)
                return [_DataBlock(link_path, self.master_file, 1, int(dataset.shape[0]), dataset)]
            blocks.append(block)
        covered = sum(block.count for block in blocks)
        if not blocks or blocks[0].first != 1 or covered != dataset.shape[0]:
            raise NXmxError(
                f"{self.master_file}: {link_path} maps {covered} of its {dataset.shape[0]} "
                "frames to data files, expected all of them in order"
            )
        return blocks

    def _source_block(
        self, source: Any, path: Path, link_path: str, first: int, count: int
    ) -> _DataBlock | None:
        """One VDS source as a block of its data file, or None if it is no frame range."""
        vspace, src_space = source.vspace, source.src_space
        if vspace.get_select_type() != h5py.h5s.SEL_HYPERSLABS or (
            src_space.get_select_type() not in (h5py.h5s.SEL_HYPERSLABS, h5py.h5s.SEL_ALL)
        ):
            return None
        if vspace.get_select_npoints() != count * math.prod(vspace.shape[1:]):
            return None  # strided (interleaved) frames
        handle = self._master if path == self.master_file else None
        if handle is None:
            handle = self._open_data_file(path, link_path, first)
        where = f"{path}:{source.dset_name}"
        dataset = self._frames_dataset(handle.get(source.dset_name), where, link_path)
        # nexgen maps its VDS onto the master's own data_NNNNNN links: name the data file.
        path = Path(dataset.file.filename)
        if src_space.get_select_type() == h5py.h5s.SEL_ALL:
            offset, selected = 0, dataset.shape[0] * math.prod(dataset.shape[1:])
        else:
            (offset, *_), _ = src_space.get_select_bounds()
            selected = src_space.get_select_npoints()
        if selected != count * math.prod(dataset.shape[1:]):
            return None
        return _DataBlock(link_path, path, first, count, dataset, int(offset))

    def _relative(self, name: str, must_exist_for: str | None = None) -> Path:
        """A linked file's path: relative names are beside the master ("." is the master)."""
        path = self.master_file if name == "." else Path(name)
        path = path if path.is_absolute() else self.master_file.parent / path
        if must_exist_for is not None and not path.is_file():
            raise NXmxError(
                f"{path}: data file does not exist (a source of "
                f"{self.master_file}:{must_exist_for})"
            )
        return path

    def _open_block(self, group: h5py.Group, link_path: str, name: str, first: int) -> _DataBlock:
        """Open the dataset a data_NNNNNN entry names, in its own file when external."""
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            path = self._relative(link.filename)
            node = self._open_data_file(path, link_path, first).get(link.path)
            where = f"{path}:{link.path}"
        else:
            path = self.master_file
            try:
                node = group.get(name)
            except (OSError, KeyError) as error:
                raise NXmxError(f"{path}: cannot open {link_path} ({error})") from error
            where = f"{path}:{link_path}"
        dataset = self._frames_dataset(node, where, link_path)
        low = dataset.attrs.get("image_nr_low")
        if low is not None:
            number = int(np.asarray(low).reshape(-1)[0])
            if first == 1:
                self.image_nr_start = number  # 0, 1 or any image_nr_start the DAQ set
            expected = self.image_nr_start + first - 1
            if number != expected:
                raise NXmxError(
                    f"{where}: image_nr_low is {number}, expected {expected} after the "
                    "frames of the data files before it"
                )
        return _DataBlock(link_path, path, first, int(dataset.shape[0]), dataset)

    def _check_dtype(self) -> np.dtype:
        stored = np.dtype(self._blocks[0].dataset.dtype)
        if stored not in KERNEL_DTYPES and stored not in WIDENED_DTYPES:
            raise NXmxError(
                f"{self._blocks[0].path}: {self._blocks[0].link} holds {stored} frames, "
                "expected uint8, uint16, uint32, int16, int32 or float32"
            )
        return stored

    @property
    def frame_dtype(self) -> np.dtype:
        """The dtype `read_frames` returns: the stored one, uint8/int16 widened for the kernel."""
        return WIDENED_DTYPES.get(self.stored_dtype, self.stored_dtype)

    @property
    def overflow_value(self) -> int | None:
        """The value an Eiger writes into an overflowed or defective pixel: 2^n - 1 of the
        stored integer type (2^31 - 1 for int32); None for float frames."""
        if self.stored_dtype.kind not in "iu":
            return None
        return int(np.iinfo(self.stored_dtype).max)

    @property
    def max_valid_value(self) -> float:
        """The largest count a pixel may hold and still be used (`max_valid_count`)."""
        return max_valid_count(self.geometry.saturation_value, self.stored_dtype)

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
        """Images first..last (1-based, inclusive) as one (n, ny, nx) array of
        `frame_dtype` (the stored type; uint8 and int16 widened for the kernel).

        Frames spanning two data files are stitched. Each frame is read on its own, so a
        corrupt chunk is reported with its data file and image number.
        """
        self._check_range(first, last)
        ny, nx = self.geometry.image_shape
        out = np.empty((last - first + 1, ny, nx), dtype=self.stored_dtype)
        for block in self._blocks:
            start = max(first, block.first)
            stop = min(last, block.first + block.count - 1)
            for image in range(start, stop + 1):
                try:
                    block.dataset.read_direct(
                        out, np.s_[block.offset + image - block.first], np.s_[image - first]
                    )
                except (OSError, ValueError, RuntimeError) as error:
                    raise NXmxError(
                        f"{block.path}: cannot read image {image} (frame "
                        f"{block.offset + image - block.first} of {block.dataset.name}): "
                        f"corrupt or truncated data file? ({error})"
                    ) from error
        if self.stored_dtype in WIDENED_DTYPES:
            return out.astype(self.frame_dtype)
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
