"""Reconstructed volumes as NeXus NXdata (HDF5, float32, chunked, compressed).

The writer fills `<name>.partial` and renames it to its final name only when every slice
is in and the file is closed, so a failed or killed run never leaves a volume that
looks complete; `abort` removes the partial file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

PARTIAL_SUFFIX = ".partial"
VOLUME_DATASET = "/entry/data/data"


class VolumeWriter:
    """Write a (z, y, x) volume slab by slab; use as a context manager.

    z is the detector row (slice index), y and x the slice's rows and columns. Leaving
    the block normally publishes the file; leaving on an error removes it.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        *,
        first_row: int,
        process: Mapping[str, Any],
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.shape = shape
        self._written = np.zeros(shape[0], dtype=bool)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._file = h5py.File(self.partial, "w")
        entry = self._file.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        self._file.attrs["default"] = "entry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data.attrs["axes"] = ["z", "y", "x"]
        for index, axis in enumerate(("z", "y", "x")):
            data.attrs[f"{axis}_indices"] = index
        n_z, n_y, n_x = shape
        z = data.create_dataset("z", data=np.arange(first_row, first_row + n_z, dtype=np.int32))
        z.attrs["long_name"] = "detector row"
        z.attrs["units"] = "pixel"
        for axis, size in (("y", n_y), ("x", n_x)):
            coordinate = data.create_dataset(axis, data=np.arange(size) - size // 2)
            coordinate.attrs["units"] = "pixel"
        self._volume = data.create_dataset(
            "data",
            shape=shape,
            dtype=np.float32,
            chunks=(1, min(n_y, 256), min(n_x, 256)),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        self._volume.attrs["long_name"] = "linear attenuation coefficient"
        self._volume.attrs["units"] = "1/pixel"
        process_group = entry.create_group("process")
        process_group.attrs["NX_class"] = "NXprocess"
        process_group.create_dataset("program", data="prefect-beamline tomo")
        for key, value in process.items():
            stored = value if isinstance(value, int | float | str) else json.dumps(value)
            process_group.create_dataset(key, data=stored)

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.publish()
        else:
            self.abort()

    def write(self, first_slice: int, slices: np.ndarray) -> None:
        """Store slices first_slice.. (0-based within the volume)."""
        stop = first_slice + slices.shape[0]
        if slices.shape[1:] != self.shape[1:] or not 0 <= first_slice < stop <= self.shape[0]:
            raise ValueError(
                f"slices {first_slice}..{stop - 1} of shape {slices.shape[1:]} do not fit "
                f"a volume of shape {self.shape}"
            )
        self._volume[first_slice:stop] = slices.astype(np.float32, copy=False)
        self._written[first_slice:stop] = True

    def publish(self) -> Path:
        """Close and rename to the final name; refuses while slices are missing."""
        missing = np.flatnonzero(~self._written)
        if missing.size:
            self.abort()
            raise RuntimeError(
                f"{self.path}: {missing.size} slices were never written (first {missing[0]})"
            )
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        if self._file.id.valid:
            self._file.close()
        self.partial.unlink(missing_ok=True)


def central_slices(path: Path) -> dict[str, np.ndarray]:
    """The three orthogonal planes through the volume's centre: xy, xz, yz."""
    with h5py.File(path, "r") as handle:
        volume = handle[VOLUME_DATASET]
        n_z, n_y, n_x = volume.shape
        return {
            "xy": np.asarray(volume[n_z // 2]),
            "xz": np.asarray(volume[:, n_y // 2, :]),
            "yz": np.asarray(volume[:, :, n_x // 2]),
        }
