"""Frames of an NXmx collection as their raw (still compressed) HDF5 chunks.

h5py runs HDF5's filter pipeline under one global lock, so bitshuffle-LZ4 decompression
in several threads of one process does not overlap (95 ms for a 16 Mpixel frame; a raw
chunk read takes 0.4 ms). This reader hands out each frame's chunk as stored
(`read_direct_chunk`), and `RawFrame.decode` decompresses it in the `bslz4` kernel with
the GIL released: read on one thread, decode and analyse on many.

It also follows files still being written with SWMR (`swmr=True` and `refresh()`), so a
live watcher sees new images by their count without waiting for the files to close.

    with RawFrameReader(master_file) as reader:
        for raw in reader.iter_frames(1, reader.n_images):
            frame = raw.decode(out=buffer)        # (ny, nx), no HDF5 lock held
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from prefect_beamline.ext.bslz4 import BitshuffleLZ4Error, decode_bslz4
from prefect_beamline.formats.nxmx import DATA_GROUP, NXmxError
from prefect_beamline.formats.reader import FileReader, open_hdf5

BITSHUFFLE_FILTER_ID = 32008
BITSHUFFLE_LZ4 = 2  # bitshuffle's cd_values[4] for LZ4 compression
_FILTER_SKIPPED = 1  # read_direct_chunk's filter mask: the chunk was stored unfiltered
SWMR_READ_ATTEMPTS = 5


class ChunkNotWritten(NXmxError):
    """The dataset's extent counts the image but its chunk was never written. Under SWMR,
    the writer has grown the dataset and not yet written the frame: read it later."""


@dataclass(frozen=True)
class RawFrame:
    """One frame's chunk as stored: bitshuffle-LZ4 bytes (`compressed`), or raw pixels.

    `where` names the file, dataset and image for error messages.
    """

    image_number: int
    chunk: bytes | memoryview
    compressed: bool
    shape: tuple[int, int]
    dtype: np.dtype
    where: str = field(default="", compare=False)

    def decode(self, out: np.ndarray | None = None, n_threads: int | None = 1) -> np.ndarray:
        """The frame as a (ny, nx) array; decompression releases the GIL."""
        if not self.compressed:
            frame = np.frombuffer(self.chunk, dtype=self.dtype).reshape(self.shape)
            if out is None:
                return frame.copy()
            out[...] = frame
            return out
        try:
            return decode_bslz4(
                self.chunk, self.shape, self.dtype, out=out, n_threads=n_threads, where=self.where
            )
        except BitshuffleLZ4Error as error:
            raise NXmxError(str(error)) from error


@dataclass
class _Block:
    """One data file's dataset: images first..first+count-1 (count grows under SWMR)."""

    path: Path
    first: int
    dataset: h5py.Dataset
    compressed: bool

    @property
    def count(self) -> int:
        return int(self.dataset.shape[0])


def bslz4_dataset(dataset: h5py.Dataset, where: str) -> bool:
    """True when `dataset` stores one frame per chunk with only bitshuffle-LZ4; False
    when it stores them unfiltered; NXmxError for any other layout."""
    if dataset.ndim != 3 or dataset.chunks is None or dataset.chunks != (1, *dataset.shape[1:]):
        raise NXmxError(
            f"{where}: chunks {dataset.chunks} for shape {dataset.shape}, expected one frame "
            "per chunk (1, ny, nx) for raw chunk reads"
        )
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(index) for index in range(plist.get_nfilters())]
    if not filters:
        return False
    if len(filters) == 1 and filters[0][0] == BITSHUFFLE_FILTER_ID:
        options = filters[0][2]
        if len(options) > 4 and options[4] == BITSHUFFLE_LZ4:
            return True
    names = ", ".join(f"{code} {name!r}" for code, _, _, name in filters)
    raise NXmxError(f"{where}: filters {names}, expected bitshuffle-LZ4 (32008) or none")


class RawFrameReader(FileReader):
    """The frames of an NXmx master's `/entry/data/data_NNNNNN` links, chunk by chunk.

    With `swmr=True` the data files are opened for SWMR reading and `refresh()` picks
    up images (and data files) written since; data files not yet created are skipped
    until they appear. Use as a context manager.
    """

    def __init__(self, master_file: str | Path, *, swmr: bool = False) -> None:
        self.master_file = Path(master_file)
        self.swmr = swmr
        self._master = open_hdf5(self.master_file, NXmxError, "master")
        self._blocks: list[_Block] = []
        self._files: list[h5py.File] = []
        try:
            group = self._master.get(DATA_GROUP)
            if not isinstance(group, h5py.Group):
                raise NXmxError(f"{self.master_file}: required group {DATA_GROUP} is missing")
            self._names = sorted(name for name in group if name.startswith("data_"))
            if not self._names:
                raise NXmxError(f"{self.master_file}: {DATA_GROUP} has no data_NNNNNN links")
            self.refresh()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for handle in reversed(self._files):
            handle.close()
        self._files.clear()
        self._blocks.clear()
        if self._master:
            self._master.close()

    @property
    def n_images(self) -> int:
        """Images readable now (the data files opened so far, as last refreshed)."""
        return sum(block.count for block in self._blocks)

    @property
    def image_shape(self) -> tuple[int, int]:
        shape = self._first_block().dataset.shape
        return int(shape[1]), int(shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self._first_block().dataset.dtype

    def _first_block(self) -> _Block:
        if not self._blocks:
            raise NXmxError(f"{self.master_file}: no data file written yet")
        return self._blocks[0]

    @property
    def first_block(self) -> _Block:
        """The first data file's dataset (NXmxError while none is written)."""
        return self._first_block()

    def planned_images(self) -> int:
        """Images the collection will hold when complete: the master's
        detectorSpecific/nimages (times ntrigger) as the DECTRIS filewriter writes it,
        else the last opened data file's image_nr_high, else the images readable now."""
        specific = "/entry/instrument/detector/detectorSpecific"
        nimages = self._master.get(f"{specific}/nimages")
        if isinstance(nimages, h5py.Dataset):
            triggers = self._master.get(f"{specific}/ntrigger")
            count = int(np.asarray(nimages[()]).reshape(-1)[0])
            if isinstance(triggers, h5py.Dataset):
                count *= max(1, int(np.asarray(triggers[()]).reshape(-1)[0]))
            return count
        if self._blocks:
            high = self._blocks[-1].dataset.attrs.get("image_nr_high")
            if high is not None and len(self._blocks) == len(self._names):
                return int(np.asarray(high).reshape(-1)[0])
        return self.n_images

    def refresh(self) -> int:
        """Re-read the image counts (SWMR) and open data files that appeared; the count."""
        for block in self._blocks:
            if self.swmr:
                block.dataset.refresh()
        # A data file after a partly written one may already exist; only open the next
        # once the ones before are full, so image numbers stay contiguous.
        while len(self._blocks) < len(self._names):
            if self._blocks and not self._full(self._blocks[-1]):
                break
            opened = self._open(self._names[len(self._blocks)], self.n_images + 1)
            if opened is None:
                break
            self._blocks.append(opened)
        return self.n_images

    def _full(self, block: _Block) -> bool:
        high = block.dataset.attrs.get("image_nr_high")
        if high is None:
            return True
        return block.first + block.count - 1 >= int(np.asarray(high).reshape(-1)[0])

    def _open(self, name: str, first: int) -> _Block | None:
        link_path = f"{DATA_GROUP}/{name}"
        link = self._master[DATA_GROUP].get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            path = Path(link.filename)
            path = path if path.is_absolute() else self.master_file.parent / path
            if not path.is_file():
                if self.swmr:
                    return None  # not written yet
                raise NXmxError(f"{path}: data file does not exist (linked from {link_path})")
            try:
                handle = h5py.File(
                    path, "r", swmr=self.swmr, libver="latest" if self.swmr else None
                )
            except OSError as error:
                if self.swmr:
                    return None  # being created: try again at the next refresh
                raise NXmxError(f"{path}: data file is not readable HDF5 ({error})") from error
            node = handle.get(link.path)
            if node is None and self.swmr:
                handle.close()  # created, its dataset not yet: try again at the next refresh
                return None
            self._files.append(handle)
            where = f"{path}:{link.path}"
        else:
            path, node, where = self.master_file, self._master.get(link_path), link_path
        if not isinstance(node, h5py.Dataset):
            raise NXmxError(f"{where}: missing, expected a dataset of frames for {link_path}")
        return _Block(path, first, node, bslz4_dataset(node, where))

    def read(self, image_number: int) -> RawFrame:
        """Image `image_number` (1-based) as its raw chunk."""
        for block in self._blocks:
            if block.first <= image_number < block.first + block.count:
                index = image_number - block.first
                where = f"{block.path}:{block.dataset.name} image {image_number}"
                filter_mask, chunk = self._read_chunk(block, index, where)
                return RawFrame(
                    image_number=image_number,
                    chunk=chunk,
                    compressed=block.compressed and not filter_mask & _FILTER_SKIPPED,
                    shape=self.image_shape,
                    dtype=self.dtype,
                    where=where,
                )
        raise NXmxError(
            f"{self.master_file}: image {image_number} requested, {self.n_images} readable"
        )

    def _read_chunk(self, block: _Block, index: int, where: str) -> tuple[int, bytes]:
        """One chunk as stored. Under SWMR a chunk index caught mid-update can read as
        garbage (h5py then fails, MemoryError for an absurd size): refresh and retry.
        A chunk never written raises ChunkNotWritten at once."""
        attempts = SWMR_READ_ATTEMPTS if self.swmr else 1
        for attempt in range(attempts):
            try:
                filter_mask, chunk = block.dataset.id.read_direct_chunk((index, 0, 0))
                return int(filter_mask), bytes(chunk)
            except (OSError, ValueError, KeyError, MemoryError, RuntimeError) as error:
                if isinstance(error, RuntimeError) and "not allocated" in str(error):
                    raise ChunkNotWritten(
                        f"{where}: its chunk is not written (the file is incomplete, or still "
                        "being written)"
                    ) from error
                if attempt + 1 == attempts:
                    raise NXmxError(f"{where}: cannot read its chunk ({error!r})") from error
                time.sleep(0.01 * (attempt + 1))
                block.dataset.refresh()
        raise AssertionError("unreachable")

    def iter_frames(self, first: int, last: int) -> Iterator[RawFrame]:
        """Images first..last (inclusive), one raw chunk at a time."""
        for image_number in range(first, last + 1):
            yield self.read(image_number)


def encode_bslz4(frame: np.ndarray, block_elements: int = 0) -> bytes:
    """`frame` as the bitshuffle-LZ4 chunk the HDF5 filter (hdf5plugin) stores for it:
    what a detector sends in a Stream V2 "bslz4" array and writes to its data files.
    `block_elements` 0 is bitshuffle's default (8192 bytes per block)."""
    import hdf5plugin

    frame = np.ascontiguousarray(frame)
    with h5py.File(f"bslz4-{id(frame)}", "w", driver="core", backing_store=False) as scratch:
        dataset = scratch.create_dataset(
            "frame",
            data=frame[np.newaxis],
            chunks=(1, *frame.shape),
            **hdf5plugin.Bitshuffle(nelems=block_elements, cname="lz4"),
        )
        filter_mask, chunk = dataset.id.read_direct_chunk((0,) * (frame.ndim + 1))
    if filter_mask:
        raise ValueError(f"HDF5 stored a {frame.shape} {frame.dtype} frame unfiltered")
    return bytes(chunk)
