"""Raw chunk reads of NXmx collections, and a SWMR watcher that sees images while the
data files are still open for writing."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.nxmx import NXmxCollection, NXmxError
from prefect_beamline.formats.raw_chunks import RawFrameReader
from prefect_beamline.live.swmr import SwmrWatcher, replay_with_swmr
from prefect_beamline.techniques.mx.synth import write_mx_collection


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    collection = write_mx_collection(
        tmp_path_factory.mktemp("source"), n_images=7, shape=(96, 120), images_per_data_file=3
    )
    return collection.master_file


def test_raw_frames_decode_to_what_h5py_reads(source: Path) -> None:
    with RawFrameReader(source) as reader, NXmxCollection(source) as collection:
        assert reader.n_images == 7 and reader.image_shape == (96, 120)
        for raw in reader.iter_frames(1, 7):
            assert raw.compressed
            np.testing.assert_array_equal(
                raw.decode(), collection.read_frames(raw.image_number, raw.image_number)[0]
            )


def test_reading_past_the_written_images_names_the_master(source: Path) -> None:
    with RawFrameReader(source) as reader, pytest.raises(NXmxError, match="image 8 requested"):
        reader.read(8)


def test_a_corrupt_chunk_names_its_file_and_image(tmp_path: Path, source: Path) -> None:
    master = replay_with_swmr(source, tmp_path / "copy")
    data_file = master.parent / "xtal_1_data_000001.h5"
    with h5py.File(data_file, "r+") as handle:
        handle["/entry/data/data"].id.write_direct_chunk((1, 0, 0), b"\x00" * 40)
    with RawFrameReader(master) as reader, pytest.raises(NXmxError, match="image 2"):
        reader.read(2).decode()


def test_watcher_sees_images_before_the_files_are_closed(tmp_path: Path, source: Path) -> None:
    target = tmp_path / "live"
    seen_while_writing: list[int] = []
    written: dict[int, float] = {}
    writer = threading.Thread(
        target=replay_with_swmr,
        args=(source, target),
        kwargs={"rate_hz": 40, "written_at": written},
    )
    writer.start()
    with SwmrWatcher(target / source.name, poll_s=0.005) as watcher:
        frames = []
        for raw in watcher.frames(7, stall_timeout_s=20):
            frames.append(raw)
            if writer.is_alive():
                seen_while_writing.append(raw.image_number)
    writer.join()
    assert [raw.image_number for raw in frames] == list(range(1, 8))
    assert len(seen_while_writing) >= 3  # most frames seen while the writer was running
    with NXmxCollection(source) as collection:
        for raw in frames:
            np.testing.assert_array_equal(
                raw.decode(), collection.read_frames(raw.image_number, raw.image_number)[0]
            )


def test_watcher_times_out_naming_the_count_it_reached(tmp_path: Path, source: Path) -> None:
    master = replay_with_swmr(source, tmp_path / "done")
    with SwmrWatcher(master) as watcher, pytest.raises(TimeoutError, match="7 of 9 images"):
        list(watcher.frames(9, stall_timeout_s=0.2))


def test_a_frame_grown_but_not_yet_written_is_taken_at_the_next_poll(
    tmp_path: Path, source: Path
) -> None:
    """A SWMR writer grows the dataset, then writes the frame's chunk: a reader between
    the two saw the image counted with no chunk behind it, and h5py's RuntimeError
    ("chunk storage is not allocated") failed the live run (CI, 2026-12-07)."""
    master = replay_with_swmr(source, tmp_path / "copy")
    last_file = master.parent / "xtal_1_data_000003.h5"  # image 7, of 3 per file
    with h5py.File(last_file, "r+") as handle:
        dataset = handle["/entry/data/data"]
        dataset.attrs["image_nr_high"] = np.uint64(8)
        dataset.resize(2, axis=0)  # image 8 counted, its chunk not written
    with RawFrameReader(master) as reader, pytest.raises(NXmxError, match="image 8.*not written"):
        reader.read(8)
    with SwmrWatcher(master) as watcher:
        assert [raw.image_number for raw in watcher.poll()] == list(range(1, 8))
        assert watcher.poll() == [] and watcher.seen == 7  # image 8 is not skipped
        watcher.close()  # its files, so this test can write the chunk (the count stays)
        with RawFrameReader(source) as source_frames:
            chunk = source_frames.read(7).chunk
        with h5py.File(last_file, "r+") as handle:
            handle["/entry/data/data"].id.write_direct_chunk((1, 0, 0), chunk)
        (eighth,) = watcher.poll()
    assert eighth.image_number == 8 and eighth.chunk == chunk
