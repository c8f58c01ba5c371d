"""One open reader per collection per process, shared by the run's chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.formats.shared import open_readers, shared_reader
from prefect_beamline.techniques.mx.synth import write_mx_collection


@pytest.fixture
def master(tmp_path: Path) -> Path:
    return write_mx_collection(tmp_path, n_images=2, shape=(64, 128)).master_file


def counting_opener(opened: list[Path]):  # type: ignore[no-untyped-def]
    def open_reader(path: Path) -> NXmxCollection:
        opened.append(path)
        return NXmxCollection(path)

    return open_reader


def test_chunks_inside_a_held_run_share_one_reader_opened_once(master: Path) -> None:
    opened: list[Path] = []
    opener = counting_opener(opened)
    with shared_reader(master, "sig", opener) as held:
        for _ in range(3):
            with shared_reader(master, "sig", opener) as chunk:
                assert chunk is held
                assert chunk.read_frames(1, 2).shape == (2, 64, 128)
    assert opened == [master.resolve()]


def test_the_last_holder_closes_the_reader(master: Path) -> None:
    with shared_reader(master) as reader:
        assert open_readers() == 1
    assert open_readers() == 0
    with pytest.raises(Exception):  # noqa: B017 (h5py's closed-file error type varies)
        reader.read_frames(1, 1)


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
