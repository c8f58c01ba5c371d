"""Movie readers fail clearly on broken files; STAR tables have RELION's columns."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import starfile

from prefect_beamline.formats import star
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.mrc import (
    MovieReader,
    read_gain_reference,
    write_mrc,
    write_tiff_movie,
)

OPTICS = star.Optics(pixel_size_angstrom=1.1, voltage_kv=300, cs_mm=2.7, amplitude_contrast=0.1)


def movie(tmp_path: Path, name: str = "m.mrc") -> Path:
    frames = np.arange(4 * 16 * 20, dtype=np.uint16).reshape(4, 16, 20)
    return write_mrc(tmp_path / name, frames, 0.85)


def test_mrc_movie_reads_frame_by_frame_with_pixel_size(tmp_path: Path) -> None:
    with MovieReader(movie(tmp_path)) as reader:
        assert (reader.n_frames, reader.shape) == (4, (16, 20))
        assert reader.pixel_size_angstrom == pytest.approx(0.85)
        assert reader.frame(2)[0, 0] == 2 * 16 * 20


def test_half_written_mrc_names_the_file(tmp_path: Path) -> None:
    path = movie(tmp_path)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataFileError, match=r"m\.mrc.*not a complete MRC movie"):
        MovieReader(path)


def test_garbage_and_unknown_formats_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "g.mrc"
    garbage.write_bytes(b"\0" * 100)
    with pytest.raises(DataFileError, match="g.mrc"):
        MovieReader(garbage)
    with pytest.raises(DataFileError, match="unknown movie format"):
        MovieReader(garbage.rename(tmp_path / "g.xyz"))
    with pytest.raises(DataFileError, match="does not exist"):
        MovieReader(tmp_path / "missing.mrc")


def test_tiff_movie_and_truncated_tiff(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 9, (5, 32, 24)).astype(np.uint8)
    path = write_tiff_movie(tmp_path / "t.tiff", frames)
    with MovieReader(path) as reader:
        assert reader.n_frames == 5
        np.testing.assert_array_equal(reader.frame(4), frames[4])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFileError, match="t.tiff"), MovieReader(path) as reader:
        reader.check_complete()
        for _ in reader.iter_frames():
            pass


def test_gain_reference_must_match_the_frames(tmp_path: Path) -> None:
    gain = write_mrc(tmp_path / "gain.mrc", np.ones((16, 20), np.float32), 0.0)
    assert read_gain_reference(gain, (16, 20)).shape == (16, 20)
    with pytest.raises(DataFileError, match="differs from the movie frames"):
        read_gain_reference(gain, (20, 16))


def test_star_tables_have_relion_columns(tmp_path: Path) -> None:
    row = star.ctf_row("a.mrc", "a.ctf", 15000.0, 14000.0, 33.0, 0.4, 4.2, metadata="a.star")
    path = star.write_table(tmp_path / "micrographs_ctf.star", OPTICS, [row])
    tables = starfile.read(path, always_dict=True)
    assert tables["optics"]["rlnVoltage"].iloc[0] == 300
    assert tables["optics"]["rlnMicrographPixelSize"].iloc[0] == pytest.approx(1.1)
    micrographs = tables["micrographs"]
    assert list(micrographs.columns) == [
        "rlnMicrographName",
        "rlnOpticsGroup",
        "rlnMicrographMetadata",
        "rlnCtfImage",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnCtfAstigmatism",
        "rlnDefocusAngle",
        "rlnCtfFigureOfMerit",
        "rlnCtfMaxResolution",
    ]
    assert micrographs["rlnCtfAstigmatism"].iloc[0] == pytest.approx(1000.0)
    assert micrographs["rlnCtfImage"].iloc[0] == "a.ctf:mrc"


def test_concurrent_upserts_keep_one_row_per_micrograph(tmp_path: Path) -> None:
    path = tmp_path / "corrected_micrographs.star"

    def add(index: int) -> int:
        return star.upsert_rows(path, OPTICS, [star.motion_row(f"m{index % 6}.mrc", index, 1, 2)])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, range(24)))
    table = star.read_micrographs(path)
    assert sorted(table["rlnMicrographName"]) == [f"m{i}.mrc" for i in range(6)]
