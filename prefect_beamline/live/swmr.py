"""HDF5 collections written with SWMR: a writer that replays a detector, and a watcher.

The watcher is Diamond's file-watcher idea: it notices new images by the data files'
image count (SWMR readers see each flushed frame) without waiting for a file to close,
and hands each new frame on as its raw chunk. The writer replays an existing NXmx
collection's chunks at a set rate into a new folder, as a DECTRIS filewriter does while
the detector runs (the master first, then data files growing frame by frame).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from prefect_beamline.formats.nxmx import DATA_GROUP
from prefect_beamline.formats.raw_chunks import ChunkNotWritten, RawFrame, RawFrameReader


def replay_with_swmr(
    source_master: Path,
    directory: Path,
    *,
    rate_hz: float = 0.0,
    written_at: dict[int, float] | None = None,
) -> Path:
    """Copy `source_master` into `directory` and rewrite its data files there frame by
    frame with SWMR, at `rate_hz` (0: as fast as possible); returns the new master.

    Each frame is flushed before the next, so a SWMR reader sees it at once;
    `written_at` gets each image's flush time (time.time()), for latency measurements.
    """
    directory.mkdir(parents=True, exist_ok=True)
    master = directory / source_master.name
    shutil.copyfile(source_master, master)
    began = time.perf_counter()
    image_number = 0
    with RawFrameReader(source_master) as source, h5py.File(source_master, "r") as links:
        ny, nx = source.image_shape
        names = sorted(name for name in links[DATA_GROUP] if name.startswith("data_"))
        for name in names:
            link = links[DATA_GROUP].get(name, getlink=True)
            counts = links[f"{DATA_GROUP}/{name}"].shape[0]
            target = directory / Path(link.filename).name
            with h5py.File(target, "w", libver="latest") as handle:
                group = handle.require_group("entry/data")
                dataset = group.create_dataset(
                    "data",
                    shape=(0, ny, nx),
                    maxshape=(None, ny, nx),
                    dtype=source.dtype,
                    chunks=(1, ny, nx),
                    **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
                )
                # Attributes cannot be written once SWMR starts: the filewriter's range.
                dataset.attrs["image_nr_low"] = np.uint64(image_number + 1)
                dataset.attrs["image_nr_high"] = np.uint64(image_number + counts)
                handle.swmr_mode = True
                for index in range(counts):
                    image_number += 1
                    raw = source.read(image_number)
                    if rate_hz > 0:
                        delay = began + (image_number - 1) / rate_hz - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    dataset.resize(index + 1, axis=0)
                    if raw.compressed:
                        dataset.id.write_direct_chunk((index, 0, 0), raw.chunk)
                    else:
                        dataset[index] = raw.decode()
                    dataset.flush()
                    if written_at is not None:
                        written_at[image_number] = time.time()
    return master


class SwmrWatcher:
    """New images of a collection being written with SWMR, by image count.

    `poll()` returns the frames that appeared since the last call; `frames()` polls
    every `poll_s` until `n_images` frames were seen or nothing new came for
    `stall_timeout_s` (TimeoutError naming the master and the count reached).
    """

    def __init__(self, master_file: Path, *, poll_s: float = 0.02) -> None:
        self.master_file = Path(master_file)
        self.poll_s = poll_s
        self._reader: RawFrameReader | None = None
        self.seen = 0

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> SwmrWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> list[RawFrame]:
        if self._reader is None:
            if not self.master_file.is_file():
                return []
            self._reader = RawFrameReader(self.master_file, swmr=True)
        available = self._reader.refresh()
        frames = []
        for number in range(self.seen + 1, available + 1):
            try:
                frames.append(self._reader.read(number))
            except ChunkNotWritten:
                break  # counted, not yet written (the writer grows, then writes): next poll
        self.seen += len(frames)
        return frames

    def frames(self, n_images: int, *, stall_timeout_s: float = 30.0) -> Iterator[RawFrame]:
        last_new = time.monotonic()
        while self.seen < n_images:
            new = self.poll()
            if new:
                last_new = time.monotonic()
                yield from new
            elif time.monotonic() - last_new > stall_timeout_s:
                raise TimeoutError(
                    f"{self.master_file}: {self.seen} of {n_images} images after "
                    f"{stall_timeout_s} s without a new one"
                )
            else:
                time.sleep(self.poll_s)
