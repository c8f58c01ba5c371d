"""Cryo-EM movies as cameras write them: LZW/zlib TIFF (K3, SerialEM), float16 MRC, and
EER (Falcon 4) grouped into dose fractions at 4K and 8K; errors name the file."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from prefect_beamline.formats.eer import COMPRESSION_7BIT, COMPRESSION_8BIT, write_eer_movie
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.mrc import EERRendering, MovieReader, write_tiff_movie

SENSOR = (32, 40)


@pytest.mark.parametrize("compression", ["lzw", "zlib", None])
def test_tiff_movies_as_k3_and_serialem_write_them(compression: str | None, tmp_path: Path) -> None:
    frames = np.random.default_rng(2).integers(0, 30, (4, 24, 36)).astype(np.uint16)
    path = write_tiff_movie(tmp_path / "k3.tif", frames, compression=compression)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == {"lzw": 5, "zlib": 8, None: 1}[compression]
    with MovieReader(path) as reader:
        reader.check_complete()
        assert reader.n_frames == 4
        np.testing.assert_array_equal(np.stack(list(reader.iter_frames())), frames)


def test_float16_mrc_movie_is_handed_on_as_float32(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).random((3, 16, 20)).astype(np.float16)
    path = tmp_path / "f16.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(frames)
        mrc.voxel_size = 0.9
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == 12  # float16, as written by e.g. some K3/Falcon exports
    with MovieReader(path) as reader:
        assert reader.dtype == np.float32
        frame = reader.frame(1)
        assert frame.dtype == np.float32
        np.testing.assert_array_equal(frame, frames[1].astype(np.float32))


def eer_frames(n: int, per_frame: int = 30) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [
        (
            np.sort(rng.choice(SENSOR[0] * SENSOR[1], per_frame, replace=False)),
            rng.integers(0, 4, per_frame),
            rng.integers(0, 4, per_frame),
        )
        for _ in range(n)
    ]


def rendered(frames: list[tuple[np.ndarray, ...]], upsampling: int) -> np.ndarray:
    """The electrons of `frames` summed on the grid, directly (the truth)."""
    keep = upsampling.bit_length() - 1
    image = np.zeros((SENSOR[0] * upsampling, SENSOR[1] * upsampling), dtype=np.uint16)
    for positions, sub_x, sub_y in frames:
        rows, columns = np.divmod(positions, SENSOR[1])
        np.add.at(
            image,
            (
                rows * upsampling + (sub_y >> (2 - keep)),
                columns * upsampling + (sub_x >> (2 - keep)),
            ),
            1,
        )
    return image


@pytest.mark.parametrize("compression", [COMPRESSION_7BIT, COMPRESSION_8BIT])
@pytest.mark.parametrize("upsampling", [1, 2], ids=["4K-grid", "8K-grid"])
def test_eer_movie_is_read_as_dose_fractions(
    compression: int, upsampling: int, tmp_path: Path
) -> None:
    frames = eer_frames(10)
    path = write_eer_movie(tmp_path / "falcon.eer", frames, SENSOR, compression, 0.92)
    with MovieReader(path, EERRendering(frames_per_group=3, upsampling=upsampling)) as reader:
        assert reader.n_frames == 3  # 10 EER frames in groups of 3; the last one dropped
        assert reader.shape == (SENSOR[0] * upsampling, SENSOR[1] * upsampling)
        assert reader.pixel_size_angstrom == pytest.approx(0.92 / upsampling)
        for group in range(3):
            np.testing.assert_array_equal(
                reader.frame(group), rendered(frames[3 * group : 3 * group + 3], upsampling)
            )


def test_truncated_eer_movie_names_the_file(tmp_path: Path) -> None:
    path = write_eer_movie(tmp_path / "cut.eer", eer_frames(4), SENSOR)
    path.write_bytes(path.read_bytes()[:-600])
    with pytest.raises(DataFileError, match=r"cut\.eer"):
        MovieReader(path, EERRendering(frames_per_group=2))


def test_corrupt_eer_frame_names_the_file_and_frame(tmp_path: Path) -> None:
    path = write_eer_movie(tmp_path / "bad.eer", eer_frames(4), SENSOR)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[2]
        assert isinstance(page, tifffile.TiffPage)
        offset = page.dataoffsets[0]
    content = bytearray(path.read_bytes())
    content[offset : offset + 12] = b"\xff" * 12  # runs past the frame's last pixel
    path.write_bytes(bytes(content))
    with MovieReader(path, EERRendering(frames_per_group=2)) as reader:
        reader.frame(0)
        with pytest.raises(DataFileError, match=r"bad\.eer: EER frame 2: a run goes past"):
            reader.frame(1)


def test_too_few_eer_frames_for_one_group_is_named(tmp_path: Path) -> None:
    path = write_eer_movie(tmp_path / "short.eer", eer_frames(3), SENSOR)
    with pytest.raises(DataFileError, match=r"short\.eer: 3 EER frames, fewer than one group"):
        MovieReader(path, EERRendering(frames_per_group=5))
