"""One open reader per collection per process, shared by the run's chunks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.nxmx import NXmxCollection, NXmxError
from prefect_beamline.formats.shared import OpenCollection, open_readers, shared_reader
from prefect_beamline.techniques.mx.synth import write_mx_collection


@pytest.fixture
def master(tmp_path: Path) -> Path:
    return write_mx_collection(tmp_path, n_images=2, shape=(64, 128)).master_file


def counting_opener(opened: list[Path]):  # type: ignore[no-untyped-def]
    def open_reader(path: Path) -> OpenCollection:
        opened.append(path)
        return OpenCollection(path)

    return open_reader


def test_chunks_inside_a_held_run_share_one_reader_opened_once(master: Path) -> None:
    opened: list[Path] = []
    opener = counting_opener(opened)
    with shared_reader(master, "sig", opener) as held:
        for _ in range(3):
            with shared_reader(master, "sig", opener) as chunk:
                assert chunk is held
                assert [number for number, _ in chunk.frames(1, 2)] == [1, 2]
    assert opened == [master.resolve()]


def test_the_last_holder_closes_the_reader(master: Path) -> None:
    with shared_reader(master) as reader:
        assert open_readers() == 1
    assert open_readers() == 0
    with pytest.raises(Exception):  # noqa: B017 (h5py's closed-file error type varies)
        list(reader.frames(1, 1))


def test_a_rewritten_collection_is_not_read_through_a_stale_reader(master: Path) -> None:
    with shared_reader(master, "before") as old, shared_reader(master, "after") as new:
        assert old is not new
    assert open_readers() == 0


def test_a_reader_that_fails_to_open_is_not_kept(tmp_path: Path) -> None:
    with (
        pytest.raises(Exception, match="missing_master.h5"),
        shared_reader(tmp_path / "missing_master.h5"),
    ):
        pass
    assert open_readers() == 0


def recompress_with_gzip(master: Path) -> None:
    """Rewrite each data file's frames with gzip: a layout our raw decoder does not take."""
    for data_file in sorted(master.parent.glob("*_data_*.h5")):
        with h5py.File(data_file, "r+") as handle:
            old = handle["entry/data/data"]
            frames, attributes = old[()], dict(old.attrs)
            del handle["entry/data/data"]
            new = handle.create_dataset(
                "entry/data/data", data=frames, chunks=(1, *frames.shape[1:]), compression="gzip"
            )
            new.attrs.update(attributes)


@pytest.mark.parametrize("layout", ["bitshuffle-lz4", "gzip"])
def test_frames_are_the_nxmx_readers_frames_whichever_way_they_are_decoded(
    master: Path, layout: str
) -> None:
    if layout == "gzip":
        recompress_with_gzip(master)
    with NXmxCollection(master) as nxmx:
        expected = nxmx.read_frames(1, 2)
    with shared_reader(master) as collection:
        assert collection.decodes_off_the_lock == (layout == "bitshuffle-lz4")
        frames = [(number, frame.copy()) for number, frame in collection.frames(1, 2)]
    assert [number for number, _ in frames] == [1, 2]
    np.testing.assert_array_equal(np.stack([frame for _, frame in frames]), expected)


def test_a_range_outside_the_collection_names_the_file(master: Path) -> None:
    with shared_reader(master) as collection, pytest.raises(NXmxError, match=master.name):
        list(collection.frames(1, 3))


def test_eight_bit_frames_reach_the_kernel_widened_as_the_nxmx_reader_gives_them(
    master: Path,
) -> None:
    """An 8-bit Eiger collection in bitshuffle-LZ4: the raw path would hand the kernel
    uint8 frames, which it does not take; frames come as the NXmx reader widens them."""
    import hdf5plugin

    for data_file in sorted(master.parent.glob("*_data_*.h5")):
        with h5py.File(data_file, "r+") as handle:
            old = handle["entry/data/data"]
            frames, attributes = np.minimum(old[()], 200).astype(np.uint8), dict(old.attrs)
            del handle["entry/data/data"]
            new = handle.create_dataset(
                "entry/data/data",
                data=frames,
                chunks=(1, *frames.shape[1:]),
                **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
            )
            new.attrs.update(attributes)
    with NXmxCollection(master) as nxmx:
        expected = nxmx.read_frames(1, 2)
    with shared_reader(master) as collection:
        frames = [frame.copy() for _, frame in collection.frames(1, 2)]
    assert frames[0].dtype == expected.dtype != np.uint8
    np.testing.assert_array_equal(np.stack(frames), expected)
