"""What every reader of a data file shares: it is used in `with` and closes its files,
and it opens an HDF5 file the one way (`open_hdf5`)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from prefect_beamline.formats.errors import DataFileError

if TYPE_CHECKING:
    import h5py


class FileReader:
    """Base of the readers: `with Reader(path) as data:` closes every file it opened."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_hdf5(path: Path, error: type[DataFileError], role: str) -> h5py.File:
    """`path` opened read-only, else `error` naming it: the `role` file ("scan",
    "master") does not exist, or it is not HDF5 (truncated, corrupt, another format)."""
    import h5py

    if not path.is_file():
        raise error(f"{path}: {role} file does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as failure:
        raise error(f"{path}: not a readable HDF5 {role} file ({failure})") from failure
