"""Cryo-EM movies (MRC stacks, TIFF, EER), gain references and micrographs (MRC).

Movies are read one frame at a time (MRC memory-mapped, TIFF page by page, EER one dose
fraction of grouped frames at a time), so a 40-frame 4k movie never has to sit in memory
whole. TIFF movies may be uncompressed or LZW/zlib compressed (what SerialEM and K3
write; decoded by imagecodecs). float16 MRC movies (mode 12) are handed on as float32.
A movie that is half-written or corrupt raises `DataFileError` naming the file and
what is wrong with it, before any frame is processed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import tifffile

from prefect_beamline.formats.eer import EER_SUFFIXES, EERMovie
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.reader import FileReader

MRC_SUFFIXES = (".mrc", ".mrcs")
TIFF_SUFFIXES = (".tif", ".tiff")
MOVIE_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES + EER_SUFFIXES
# Stored types the kernels do not take, and what a frame is handed on as.
_WIDENED = {np.dtype(np.float16): np.dtype(np.float32)}


@dataclass(frozen=True)
class EERRendering:
    """How an EER movie becomes frames: `frames_per_group` EER frames summed into one
    (RELION's --eer_grouping) at `upsampling` x the sensor's pixels (1: 4K, 2: 8K)."""

    frames_per_group: int = 20
    upsampling: int = 1


class MovieReader(FileReader):
    """A movie opened for reading frames; use as a context manager.

    Attributes:
        path: the movie file.
        n_frames, shape (ny, nx), dtype: of the frames `frame` returns (for EER, the
            dose fractions `eer` groups; float16 widened to float32).
        pixel_size_angstrom: from the MRC header or EER metadata (None when 0 or TIFF).
    """

    def __init__(self, path: str | Path, eer: EERRendering | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFileError(f"{self.path}: movie file does not exist")
        suffix = self.path.suffix.lower()
        self._mrc: Any = None
        self._tiff: tifffile.TiffFile | None = None
        self._eer: EERMovie | None = None
        if suffix in MRC_SUFFIXES:
            self._open_mrc()
        elif suffix in TIFF_SUFFIXES:
            self._open_tiff()
        elif suffix in EER_SUFFIXES:
            rendering = eer or EERRendering()
            self._eer = EERMovie(self.path, rendering.frames_per_group, rendering.upsampling)
            self.n_frames = self._eer.n_groups
            self.shape: tuple[int, int] = self._eer.shape
            self.dtype: np.dtype = np.dtype(np.uint16)
            self.pixel_size_angstrom: float | None = self._eer.pixel_size_angstrom
        else:
            raise DataFileError(
                f"{self.path}: unknown movie format {suffix!r} (expected one of "
                f"{', '.join(MOVIE_SUFFIXES)})"
            )

    def _open_mrc(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                self._mrc = mrcfile.mmap(self.path, mode="r", permissive=False)
        except (ValueError, RuntimeWarning, OSError) as error:
            raise DataFileError(
                f"{self.path}: not a complete MRC movie (header or data block): {error}"
            ) from error
        data = self._mrc.data
        if data is None or data.ndim not in (2, 3):
            raise DataFileError(f"{self.path}: MRC data block holds no 2-D frames")
        self._frames = data if data.ndim == 3 else data[np.newaxis]
        self.n_frames = int(self._frames.shape[0])
        self.shape = (int(self._frames.shape[1]), int(self._frames.shape[2]))
        self.dtype = _WIDENED.get(self._frames.dtype, self._frames.dtype)
        size = float(self._mrc.voxel_size.x)
        self.pixel_size_angstrom = size if size > 0 else None

    def _open_tiff(self) -> None:
        try:
            self._tiff = tifffile.TiffFile(self.path)
            pages = self._tiff.pages
            self.n_frames = len(pages)
            first = pages.first
            self.shape = (int(first.shape[0]), int(first.shape[1]))
            self.dtype = np.dtype(first.dtype)
        except Exception as error:
            raise DataFileError(f"{self.path}: not a readable TIFF movie: {error}") from error
        if self.n_frames == 0:
            raise DataFileError(f"{self.path}: TIFF movie has no frames")
        self.pixel_size_angstrom = None

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (0-based), shape (ny, nx): as stored (float16 as float32; for
        EER, dose fraction `index`)."""
        if not 0 <= index < self.n_frames:
            raise IndexError(f"{self.path}: frame {index} outside 0..{self.n_frames - 1}")
        if self._eer is not None:
            return self._eer.group(index)
        if self._mrc is not None:
            return np.asarray(self._frames[index], dtype=self.dtype)
        assert self._tiff is not None
        try:
            page = self._tiff.pages[index]
            image = page.asarray()
        except Exception as error:
            raise DataFileError(
                f"{self.path}: TIFF frame {index} is unreadable (truncated or corrupt): {error}"
            ) from error
        if image.shape != self.shape:
            raise DataFileError(
                f"{self.path}: TIFF frame {index} has shape {image.shape}, frame 0 {self.shape}"
            )
        return np.asarray(image)

    def iter_frames(self) -> Iterator[np.ndarray]:
        for index in range(self.n_frames):
            yield self.frame(index)

    def check_complete(self) -> None:
        """Touch the end of the movie: a TIFF truncated after its page index fails here."""
        if self._tiff is not None:
            self.frame(self.n_frames - 1)

    def close(self) -> None:
        if self._eer is not None:
            self._eer.close()
            self._eer = None
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None


def read_gain_reference(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The gain reference (multiply raw counts by it), float32, checked against the movie.

    MRC, or TIFF (as EPU writes it beside EER movies)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (*TIFF_SUFFIXES, ".gain"):
            gain = np.asarray(tifffile.imread(path), dtype=np.float32)
        else:
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                gain = np.asarray(mrc.data, dtype=np.float32)
    except (ValueError, OSError, tifffile.TiffFileError) as error:
        raise DataFileError(f"{path}: not a readable gain reference: {error}") from error
    if gain.ndim == 3 and gain.shape[0] == 1:
        gain = gain[0]
    if gain.shape != shape:
        raise DataFileError(
            f"{path}: gain reference shape {gain.shape} differs from the movie frames {shape}"
        )
    if not np.all(np.isfinite(gain)):
        raise DataFileError(f"{path}: gain reference holds NaN or infinite values")
    return np.ascontiguousarray(gain)


def write_mrc(path: str | Path, data: np.ndarray, pixel_size_angstrom: float) -> Path:
    """An MRC file (2-D micrograph or 3-D stack) with the pixel size in its header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with mrcfile.new(partial, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = pixel_size_angstrom
        if data.ndim == 3:
            mrc.header.ispg = 0  # an image stack, not a volume
        mrc.update_header_stats()
        # mrcfile labels new files with the time: a fixed label keeps the same result
        # byte-identical when it is computed again.
        mrc.header.label[0] = b"prefect-beamline"
    partial.replace(path)
    return path


def write_tiff_movie(path: str | Path, frames: np.ndarray, compression: str = "zlib") -> Path:
    """A multi-page TIFF movie (one page per frame), as K3 and SerialEM write them
    (`compression` "lzw" as they do, "zlib", or None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, frames, photometric="minisblack", compression=compression)
    return path


def read_micrograph(path: str | Path) -> tuple[np.ndarray, float]:
    """(image, pixel size Å) of a micrograph MRC."""
    with mrcfile.open(path, mode="r") as mrc:
        return np.array(mrc.data), float(mrc.voxel_size.x)
