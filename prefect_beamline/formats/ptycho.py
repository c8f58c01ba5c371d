"""Reader of a ptychography scan file (NeXus-style, as a detector writer leaves it).

What it reads, preferred location first:

- frames: `/entry/data/data` (n_positions, ny, nx), counts, one chunk per frame;
- positions: `/entry/data/x`, `/entry/data/y`, else `/entry/sample/transformations/x`,
  `y` (NXtransformations), with a `units` attribute (m, mm, um, nm; metres if absent);
- wavelength: `/entry/instrument/beam/incident_wavelength` (m, nm, angstrom), else an
  energy in `/entry/instrument/beam/incident_energy` or `/entry/instrument/source/energy`
  (eV, keV);
- detector: `/entry/instrument/detector/distance` (m, mm), `x_pixel_size`,
  `y_pixel_size` (m, mm, um), and `pixel_mask` (NeXus: non-zero = do not use; optional).

Frames are streamed in chunks (`iter_chunks`). Everything wrong is a `PtychoFileError`
naming the file and the dataset path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters detector files use)
import numpy as np

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.reader import FileReader, open_hdf5

FRAMES = "/entry/data/data"
POSITION_GROUPS = ("/entry/data", "/entry/sample/transformations")
WAVELENGTH_FIELDS = ("/entry/instrument/beam/incident_wavelength",)
ENERGY_FIELDS = ("/entry/instrument/beam/incident_energy", "/entry/instrument/source/energy")
DETECTOR = "/entry/instrument/detector"
_HC_EV_M = 1.239841984e-6

_TO_METRES = {
    "m": 1.0,
    "metre": 1.0,
    "meter": 1.0,
    "mm": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,
    "micron": 1e-6,
    "nm": 1e-9,
    "angstrom": 1e-10,
    "å": 1e-10,
    "a": 1e-10,
}
_TO_EV = {"ev": 1.0, "kev": 1e3}


class PtychoFileError(DataFileError):
    """A missing, corrupt or inconsistent part of a ptychography scan file."""


@dataclass(frozen=True)
class PtychoGeometry:
    """Far-field geometry: what sets the object's pixel size."""

    wavelength_m: float
    detector_distance_m: float
    detector_pixel_m: tuple[float, float]  # (y, x)
    pattern_shape: tuple[int, int]

    @property
    def object_pixel_m(self) -> tuple[float, float]:
        """(y, x) pixel size of the reconstruction: λ z / (N · detector pixel)."""
        ny, nx = self.pattern_shape
        py, px = self.detector_pixel_m
        scale = self.wavelength_m * self.detector_distance_m
        return scale / (ny * py), scale / (nx * px)


class PtychoScan(FileReader):
    """An open scan file; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open_hdf5(self.path, PtychoFileError, "scan")
        try:
            self._frames = self._dataset(FRAMES)
            if self._frames.ndim != 3:
                raise self._error(
                    FRAMES, f"must be 3-D (n, ny, nx), has shape {self._frames.shape}"
                )
            self.n_positions = int(self._frames.shape[0])
            self.pattern_shape = (int(self._frames.shape[1]), int(self._frames.shape[2]))
            self.positions_m = self._read_positions()
            self.geometry = PtychoGeometry(
                wavelength_m=self._read_wavelength(),
                detector_distance_m=self._length(f"{DETECTOR}/distance", (1e-3, 1e3)),
                detector_pixel_m=(
                    self._length(f"{DETECTOR}/y_pixel_size", (1e-7, 1e-2)),
                    self._length(f"{DETECTOR}/x_pixel_size", (1e-7, 1e-2)),
                ),
                pattern_shape=self.pattern_shape,
            )
            self.valid = self._read_valid()
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def iter_chunks(self, chunk_size: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """(first index, float32 frames) for consecutive chunks of the scan's frames."""
        for start in range(0, self.n_positions, chunk_size):
            stop = min(start + chunk_size, self.n_positions)
            try:
                frames = self._frames[start:stop]
            except (OSError, RuntimeError) as error:
                raise self._error(
                    FRAMES, f"frames {start}-{stop - 1} unreadable ({error})"
                ) from None
            yield start, frames.astype(np.float32)

    # -- fields -----------------------------------------------------------------------

    def _error(self, field: str, problem: str) -> PtychoFileError:
        return PtychoFileError(f"{self.path}: {field} {problem}")

    def _dataset(self, field: str) -> h5py.Dataset:
        try:
            item = self._file.get(field)
        except (OSError, KeyError) as error:
            raise self._error(field, f"cannot be opened ({error})") from None
        if item is None:
            raise self._error(field, "is missing")
        if not isinstance(item, h5py.Dataset):
            raise self._error(field, "is not a dataset")
        return item

    def _units(self, dataset: h5py.Dataset, default: str) -> str:
        units = dataset.attrs.get("units", default)
        if isinstance(units, bytes):
            units = units.decode()
        return str(units).strip().lower()

    def _scalar(self, field: str) -> tuple[float, str]:
        dataset = self._dataset(field)
        try:
            value = float(np.asarray(dataset[()]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError, OSError) as error:
            raise self._error(field, f"is not a number ({error})") from None
        if not np.isfinite(value) or value <= 0:
            raise self._error(field, f"must be positive and finite, got {value}")
        return value, self._units(dataset, "m")

    def _length(self, field: str, plausible_m: tuple[float, float]) -> float:
        value, units = self._scalar(field)
        if units not in _TO_METRES:
            raise self._error(field, f"has units {units!r}; expected one of {sorted(_TO_METRES)}")
        metres = value * _TO_METRES[units]
        low, high = plausible_m
        if not low <= metres <= high:
            raise self._error(
                field, f"= {value} {units} is outside the plausible {low}-{high} m (wrong units?)"
            )
        return metres

    def _read_wavelength(self) -> float:
        for field in WAVELENGTH_FIELDS:
            if field in self._file:
                return self._length(field, (1e-12, 1e-7))
        for field in ENERGY_FIELDS:
            if field in self._file:
                value, units = self._scalar(field)
                if units not in _TO_EV:
                    raise self._error(field, f"has units {units!r}; expected eV or keV")
                return _HC_EV_M / (value * _TO_EV[units])
        raise PtychoFileError(
            f"{self.path}: no wavelength: none of {', '.join(WAVELENGTH_FIELDS + ENERGY_FIELDS)}"
        )

    def _read_positions(self) -> np.ndarray:
        """(n, 2) positions in metres, (y, x)."""
        for group in POSITION_GROUPS:
            if f"{group}/x" in self._file and f"{group}/y" in self._file:
                axes = []
                for axis in ("y", "x"):
                    field = f"{group}/{axis}"
                    dataset = self._dataset(field)
                    units = self._units(dataset, "m")
                    if units not in _TO_METRES:
                        raise self._error(field, f"has units {units!r}; expected a length")
                    values = np.asarray(dataset[()], dtype=np.float64).reshape(-1)
                    if values.shape[0] != self.n_positions:
                        raise self._error(
                            field,
                            f"holds {values.shape[0]} positions but {FRAMES} holds "
                            f"{self.n_positions} frames",
                        )
                    if not np.all(np.isfinite(values)):
                        raise self._error(field, "holds non-finite positions")
                    axes.append(values * _TO_METRES[units])
                return np.stack(axes, axis=1)
        names = " or ".join(f"{g}/x,y" for g in POSITION_GROUPS)
        raise PtychoFileError(f"{self.path}: scan positions are missing (looked for {names})")

    def _read_valid(self) -> np.ndarray:
        field = f"{DETECTOR}/pixel_mask"
        if field not in self._file:
            return np.ones(self.pattern_shape, dtype=bool)
        mask = np.asarray(self._dataset(field)[()])
        if mask.shape != self.pattern_shape:
            raise self._error(field, f"has shape {mask.shape}, frames are {self.pattern_shape}")
        return mask == 0
