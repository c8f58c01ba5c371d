"""One open collection per process, shared by all the chunks computing there.

A chunk task that opens the master itself pays for it every time: the master and every
data file opened, geometry checked, the pixel mask read and compared (22–28 ms per chunk
at 1.1 Mpixel, 341 ms at 16 Mpixel, issue 17). The flow run holds its collection open
with `shared_reader` while its chunks run; a chunk asking for the same collection in the
same process (threads: always; a Dask worker: while another of its chunks holds it) gets
that `OpenCollection`, with its geometry and mask already read, instead of opening its own.

An `OpenCollection` wraps the NXmx reader (which checks and describes the collection)
and, where the data files store one bitshuffle-LZ4 (or unfiltered) chunk per frame, reads
each frame's chunk as stored and decompresses it in our kernel with the GIL released
(`formats/raw_chunks.py`): h5py would decompress under its global lock, so parallel
chunks would not use more than one core for it. Other layouts (virtual datasets, other
filters) are read through the NXmx reader as before.

A collection is keyed by its file *and* the data signature the chunk's cache key holds
(size and mtime of the files), so a rewritten collection is never read through a stale
handle. It is closed when the last holder lets go. h5py serialises calls on its handles
behind its global lock, so sharing one handle between threads is safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefect_beamline.formats.nxmx import DetectorGeometry, NXmxCollection, NXmxError
from prefect_beamline.formats.raw_chunks import RawFrameReader


class OpenCollection:
    """A collection open for one run: its geometry and mask read once, frames on demand."""

    def __init__(self, master_file: str | Path) -> None:
        self.nxmx = NXmxCollection(master_file)
        self._raw: RawFrameReader | None = None
        try:
            self.geometry: DetectorGeometry = self.nxmx.geometry
            self.valid_pixels: np.ndarray = self.nxmx.valid_pixels
            self.n_images = self.nxmx.n_images
            self._raw = _raw_reader(self.nxmx)
        except BaseException:
            self.close()
            raise

    def __getattr__(self, name: str) -> object:
        """Everything else the NXmx reader describes (data files, dtype, limits, ...)."""
        if name == "nxmx":  # not set yet: the reader failed to open
            raise AttributeError(name)
        return getattr(self.nxmx, name)

    @property
    def decodes_off_the_lock(self) -> bool:
        """True when frames are decompressed by our kernel, not under h5py's lock."""
        return self._raw is not None

    def frames(self, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
        """(image number, frame) for images first..last, one frame in memory at a time.

        The frame is a buffer reused for the next one: copy it to keep it.
        """
        if self._raw is None:
            for image_number, frames in self.nxmx.iter_chunks(first, last, chunk_size=1):
                yield image_number, frames[0]
            return
        if not 1 <= first <= last <= self.n_images:
            raise NXmxError(
                f"{self.nxmx.master_file}: images {first}..{last} requested, expected a "
                f"range within 1..{self.n_images}"
            )
        buffer = np.empty(self._raw.image_shape, dtype=self._raw.dtype)
        for raw in self._raw.iter_frames(first, last):
            yield raw.image_number, raw.decode(out=buffer)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        self.nxmx.close()


def _raw_reader(nxmx: NXmxCollection) -> RawFrameReader | None:
    """A raw-chunk reader of the same frames, or None where the layout does not allow it
    (the NXmx reader then reads them)."""
    try:
        raw = RawFrameReader(nxmx.master_file)
    except NXmxError:
        return None
    if (
        raw.n_images != nxmx.n_images
        or raw.image_shape != nxmx.geometry.image_shape
        or raw.dtype != nxmx.frame_dtype  # 8- and 16-bit signed frames are widened there
    ):
        raw.close()
        return None
    return raw


@dataclass
class _Held:
    collection: OpenCollection
    holders: int = 0


_LOCK = threading.Lock()
_OPEN: dict[tuple[Path, str], _Held] = {}


@contextmanager
def shared_reader(
    master_file: str | Path,
    signature: str = "",
    opener: Callable[[Path], OpenCollection] = OpenCollection,
) -> Iterator[OpenCollection]:
    """The process's open collection of `master_file` (opened now if nobody holds one)."""
    key = (Path(master_file).resolve(), signature)
    with _LOCK:
        held = _OPEN.get(key)
        if held is None:
            held = _OPEN[key] = _Held(opener(key[0]))
        held.holders += 1
    try:
        yield held.collection
    finally:
        with _LOCK:
            held.holders -= 1
            if held.holders == 0:
                del _OPEN[key]
                held.collection.close()


def open_readers() -> int:
    """How many collections this process holds open (tests: none left behind)."""
    with _LOCK:
        return len(_OPEN)
