"""Tomography scan reader: NXtomo and APS Data Exchange, streamed by chunks of sinograms.

NXtomo keeps every frame in one stack, `/entry/instrument/detector/data`, told apart by
`image_key` (0 projection, 1 flat, 2 dark, 3 invalid) with `/entry/sample/rotation_angle`
beside it. Data Exchange keeps projections, flats and darks apart: `/exchange/data`,
`data_white`, `data_dark`, and the angles in `/exchange/theta`.

The reader never loads a whole scan: `read_rows` returns the projections of a band of
detector rows (the sinograms of those slices), and flat and dark means are computed for
the same band, frame by frame. Every failure is a `DataFileError` naming the file and
the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import h5py
import hdf5plugin  # noqa: F401  (registers compression filters facility files may use)
import numpy as np

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.reader import FileReader, open_hdf5

NXTOMO_DATA = "/entry/instrument/detector/data"
NXTOMO_IMAGE_KEY = "/entry/instrument/detector/image_key"
NXTOMO_ANGLES = ("/entry/sample/rotation_angle", "/entry/data/rotation_angle")
DXCHANGE_DATA = "/exchange/data"
DXCHANGE_FLATS = "/exchange/data_white"
DXCHANGE_DARKS = "/exchange/data_dark"
DXCHANGE_ANGLES = "/exchange/theta"
IMAGE_KEY_PROJECTION, IMAGE_KEY_FLAT, IMAGE_KEY_DARK = 0, 1, 2

Layout = Literal["nxtomo", "dxchange"]


class TomoScanError(DataFileError):
    """A missing, corrupt or inconsistent part of a tomography scan file."""


def _angles_in_degrees(dataset: h5py.Dataset) -> np.ndarray:
    units = dataset.attrs.get("units", "degree")
    if isinstance(units, bytes):
        units = units.decode()
    values = np.asarray(dataset[()], dtype=np.float64).ravel()
    if str(units).lower().startswith("rad"):
        return np.rad2deg(values)
    return values


class TomoScan(FileReader):
    """An open scan file; use as a context manager.

    Opening reads the metadata (layout, shapes, image keys, angles) and checks them, so
    a wrong file is reported before any reconstruction starts.

    Attributes:
        n_projections, n_rows, n_columns: projection count and detector shape (pixels).
        angles_deg: rotation angle of each projection, degrees.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open_hdf5(self.path, TomoScanError, "scan")
        try:
            self.layout: Layout = self._detect_layout()
            if self.layout == "nxtomo":
                self._open_nxtomo()
            else:
                self._open_dxchange()
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    # -- opening ----------------------------------------------------------------------

    def _detect_layout(self) -> Layout:
        if NXTOMO_DATA in self._file:
            return "nxtomo"
        if DXCHANGE_DATA in self._file:
            return "dxchange"
        raise TomoScanError(
            f"{self.path}: neither NXtomo ({NXTOMO_DATA}) nor Data Exchange "
            f"({DXCHANGE_DATA}) projections found"
        )

    def _dataset(self, name: str) -> h5py.Dataset:
        try:
            item = self._file[name]
        except KeyError:
            raise TomoScanError(f"{self.path}: missing dataset {name}") from None
        except (OSError, RuntimeError) as error:
            raise TomoScanError(f"{self.path}: cannot read {name} ({error})") from error
        if not isinstance(item, h5py.Dataset):
            raise TomoScanError(f"{self.path}: {name} is not a dataset")
        return item

    def _frames(self, name: str) -> h5py.Dataset:
        dataset = self._dataset(name)
        if dataset.ndim != 3:
            raise TomoScanError(
                f"{self.path}: {name} must be 3-D (frame, row, column), got shape {dataset.shape}"
            )
        return dataset

    def _read(self, dataset: h5py.Dataset, selection: tuple[object, ...]) -> np.ndarray:
        try:
            return np.asarray(dataset[selection])
        except (OSError, RuntimeError, ValueError) as error:
            raise TomoScanError(
                f"{self.path}: cannot read {dataset.name}{list(selection)!r}: corrupt or "
                f"truncated ({error})"
            ) from error

    def _open_nxtomo(self) -> None:
        self._data = self._frames(NXTOMO_DATA)
        keys = self._read(self._dataset(NXTOMO_IMAGE_KEY), (slice(None),)).astype(np.int64)
        n_frames = self._data.shape[0]
        if keys.shape != (n_frames,):
            raise TomoScanError(
                f"{self.path}: {NXTOMO_IMAGE_KEY} has {keys.size} entries for {n_frames} frames"
            )
        angle_field = next((name for name in NXTOMO_ANGLES if name in self._file), None)
        if angle_field is None:
            raise TomoScanError(f"{self.path}: missing dataset {NXTOMO_ANGLES[0]}")
        angles = _angles_in_degrees(self._dataset(angle_field))
        if angles.shape != (n_frames,):
            raise TomoScanError(
                f"{self.path}: {angle_field} has {angles.size} entries for {n_frames} frames"
            )
        self._projection_frames = np.flatnonzero(keys == IMAGE_KEY_PROJECTION)
        self._flat_frames = np.flatnonzero(keys == IMAGE_KEY_FLAT)
        self._dark_frames = np.flatnonzero(keys == IMAGE_KEY_DARK)
        self._flat_data = self._dark_data = self._data
        self.angles_deg = angles[self._projection_frames]
        self._finish_opening(NXTOMO_IMAGE_KEY)

    def _open_dxchange(self) -> None:
        self._data = self._frames(DXCHANGE_DATA)
        self._flat_data = self._frames(DXCHANGE_FLATS)
        self._dark_data = self._frames(DXCHANGE_DARKS) if DXCHANGE_DARKS in self._file else None
        self._projection_frames = np.arange(self._data.shape[0])
        self._flat_frames = np.arange(self._flat_data.shape[0])
        self._dark_frames = np.arange(0 if self._dark_data is None else self._dark_data.shape[0])
        self.angles_deg = _angles_in_degrees(self._dataset(DXCHANGE_ANGLES))
        if self.angles_deg.shape != (self._data.shape[0],):
            raise TomoScanError(
                f"{self.path}: {DXCHANGE_ANGLES} has {self.angles_deg.size} angles for "
                f"{self._data.shape[0]} projections"
            )
        for name, dataset in ((DXCHANGE_FLATS, self._flat_data), (DXCHANGE_DARKS, self._dark_data)):
            if dataset is not None and dataset.shape[1:] != self._data.shape[1:]:
                raise TomoScanError(
                    f"{self.path}: {name} frames are {dataset.shape[1:]}, projections "
                    f"{self._data.shape[1:]}"
                )
        self._finish_opening(DXCHANGE_FLATS)

    def _finish_opening(self, keys_field: str) -> None:
        self.n_rows, self.n_columns = (int(n) for n in self._data.shape[1:])
        self.n_projections = int(self._projection_frames.size)
        if self.n_projections < 2:
            raise TomoScanError(f"{self.path}: {self.n_projections} projections; need at least 2")
        if self._flat_frames.size == 0:
            raise TomoScanError(f"{self.path}: no flat-field frames ({keys_field})")
        if not np.all(np.isfinite(self.angles_deg)):
            raise TomoScanError(f"{self.path}: rotation angles are not all finite")

    # -- reading ----------------------------------------------------------------------

    @property
    def angles_rad(self) -> np.ndarray:
        return np.asarray(np.deg2rad(self.angles_deg))

    @property
    def dtype(self) -> np.dtype:
        """The projections' dtype as stored (counts)."""
        return np.dtype(self._data.dtype)

    @property
    def rows_per_storage_chunk(self) -> int:
        """Detector rows one HDF5 chunk of the projections spans (1 if contiguous):
        reading any row of a chunk reads, and decompresses, all of its rows."""
        chunks = self._data.chunks
        return 1 if chunks is None else int(chunks[1])

    def _check_rows(self, first_row: int, stop_row: int) -> None:
        if not 0 <= first_row < stop_row <= self.n_rows:
            raise ValueError(
                f"{self.path}: rows {first_row}..{stop_row - 1} outside the detector's "
                f"0..{self.n_rows - 1}"
            )

    def _mean_frames(
        self, dataset: h5py.Dataset | None, frames: np.ndarray, rows: slice
    ) -> np.ndarray:
        total = np.zeros((rows.stop - rows.start, self.n_columns), dtype=np.float64)
        if dataset is None or frames.size == 0:
            return total.astype(np.float32)
        for frame in frames:
            total += self._read(dataset, (int(frame), rows, slice(None)))
        return np.asarray(total / frames.size, dtype=np.float32)

    def flat_and_dark(self, first_row: int, stop_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean flat and mean dark (float32, row, column) of rows first_row..stop_row-1.

        A scan without darks gets zeros.
        """
        self._check_rows(first_row, stop_row)
        rows = slice(first_row, stop_row)
        flat = self._mean_frames(self._flat_data, self._flat_frames, rows)
        dark = self._mean_frames(self._dark_data, self._dark_frames, rows)
        return flat, dark

    def read_rows(self, first_row: int, stop_row: int) -> np.ndarray:
        """Raw projections (angle, row, column) of rows first_row..stop_row-1."""
        self._check_rows(first_row, stop_row)
        frames = self._projection_frames
        first, last = int(frames[0]), int(frames[-1])
        if last - first + 1 == frames.size:  # contiguous: one read
            return self._read(self._data, (slice(first, last + 1), slice(first_row, stop_row)))
        block = self._read(self._data, (slice(first, last + 1), slice(first_row, stop_row)))
        return np.ascontiguousarray(block[frames - first])

    def read_projections(self, indices: list[int]) -> np.ndarray:
        """Whole raw projections (index, row, column), by projection index."""
        frames = [int(self._projection_frames[i]) for i in indices]
        return np.stack([self._read(self._data, (frame,)) for frame in frames])

    def iter_rows(
        self, rows_per_chunk: int, first_row: int = 0, stop_row: int | None = None
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first_row, stop_row, projections) for consecutive bands of rows."""
        stop = self.n_rows if stop_row is None else stop_row
        for start in range(first_row, stop, rows_per_chunk):
            end = min(start + rows_per_chunk, stop)
            yield start, end, self.read_rows(start, end)
