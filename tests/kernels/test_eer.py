"""The EER rendering kernel (`ext/eer.py`) against its plain-Python reference, against
the electrons encoded, and against tifffile's own EER decoding (imagecodecs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from prefect_beamline.ext.eer import EERCode, EERDecodeError, eer_render
from prefect_beamline.formats.eer import (
    COMPRESSION_7BIT,
    COMPRESSION_8BIT,
    encode_eer_frame,
    write_eer_movie,
)
from tests.kernels.eer_reference import reference_render

SENSOR = (48, 64)
CODES = {
    "7bit-65001": EERCode(rle_bits=7, sub_bits=2),
    "8bit-65000": EERCode(rle_bits=8, sub_bits=2, symbol_after_skip=True),
}


def electrons(n: int, seed: int, sensor: tuple[int, int] = SENSOR) -> tuple[np.ndarray, ...]:
    """n electrons at distinct random pixels, with random sub-pixel positions."""
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(sensor[0] * sensor[1], n, replace=False))
    return positions, rng.integers(0, 4, n), rng.integers(0, 4, n)


def truth(frame: tuple[np.ndarray, ...], upsampling: int) -> np.ndarray:
    """Where the electrons are on the upsampled grid, counted directly."""
    positions, sub_x, sub_y = frame
    rows, columns = np.divmod(positions, SENSOR[1])
    drop = 2 - (upsampling.bit_length() - 1)
    image = np.zeros((SENSOR[0] * upsampling, SENSOR[1] * upsampling), dtype=np.uint16)
    np.add.at(
        image, (rows * upsampling + (sub_y >> drop), columns * upsampling + (sub_x >> drop)), 1
    )
    return image


def render(encoded: bytes, code: EERCode, upsampling: int) -> np.ndarray:
    out = np.zeros((SENSOR[0] * upsampling, SENSOR[1] * upsampling), dtype=np.uint16)
    eer_render(np.frombuffer(encoded, dtype=np.uint8).copy(), SENSOR, code, out, upsampling)
    return out


@pytest.mark.parametrize("code", CODES.values(), ids=CODES.keys())
@pytest.mark.parametrize("upsampling", [1, 2, 4])
@pytest.mark.parametrize("n_electrons", [0, 1, 40, 900])
def test_kernel_equals_reference_and_the_encoded_electrons(
    code: EERCode, upsampling: int, n_electrons: int
) -> None:
    frame = electrons(n_electrons, seed=n_electrons)
    encoded = encode_eer_frame(*frame, SENSOR[0] * SENSOR[1], code)
    rendered = render(encoded, code, upsampling)
    np.testing.assert_array_equal(rendered, reference_render(encoded, SENSOR, code, upsampling))
    np.testing.assert_array_equal(rendered, truth(frame, upsampling))


def test_electrons_at_the_first_and_last_pixel_and_long_gaps() -> None:
    # Gaps of exactly and more than the largest run (127) exercise the skip codes.
    positions = np.array([0, 127, 255, 256, 1000, SENSOR[0] * SENSOR[1] - 1])
    frame = (positions, np.array([0, 1, 2, 3, 0, 3]), np.array([3, 2, 1, 0, 0, 3]))
    for code in CODES.values():
        encoded = encode_eer_frame(*frame, SENSOR[0] * SENSOR[1], code)
        np.testing.assert_array_equal(render(encoded, code, 2), truth(frame, 2))


def test_frames_of_a_group_add_up() -> None:
    code = CODES["7bit-65001"]
    first, second = electrons(300, seed=1), electrons(300, seed=2)
    out = np.zeros(SENSOR, dtype=np.uint16)
    for frame in (first, second):
        encoded = encode_eer_frame(*frame, SENSOR[0] * SENSOR[1], code)
        eer_render(np.frombuffer(encoded, np.uint8).copy(), SENSOR, code, out)
    np.testing.assert_array_equal(out, truth(first, 1) + truth(second, 1))


def test_truncated_bitstream_is_an_error() -> None:
    code = CODES["7bit-65001"]
    encoded = encode_eer_frame(*electrons(500, seed=3), SENSOR[0] * SENSOR[1], code)
    cut = np.frombuffer(encoded[: len(encoded) // 2], np.uint8).copy()
    with pytest.raises(EERDecodeError, match="truncated"):
        eer_render(cut, SENSOR, code, np.zeros(SENSOR, np.uint16))


def test_upsampling_beyond_the_sub_pixel_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="upsampling must be 1, 2 or 4"):
        eer_render(
            np.zeros(8, np.uint8), SENSOR, CODES["7bit-65001"], np.zeros(SENSOR, np.uint16), 3
        )


def test_out_of_the_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"out shape \(48, 64\) differs .* \(96, 128\)"):
        eer_render(
            np.zeros(8, np.uint8), SENSOR, CODES["7bit-65001"], np.zeros(SENSOR, np.uint16), 2
        )


def test_tifffile_decodes_our_eer_file_as_the_kernel_does(tmp_path: Path) -> None:
    """tifffile (imagecodecs' EER codec) reads the file our writer wrote, frame by frame,
    at the sensor's resolution: the same counts as the kernel and the electrons."""
    frames = [electrons(400, seed=seed) for seed in range(3)]
    path = write_eer_movie(tmp_path / "movie.eer", frames, SENSOR, COMPRESSION_7BIT)
    with tifffile.TiffFile(path) as tiff:
        assert len(tiff.pages) == 3
        for page, frame in zip(tiff.pages, frames, strict=True):
            assert isinstance(page, tifffile.TiffPage) and page.compression == COMPRESSION_7BIT
            decoded = page.asarray()
            np.testing.assert_array_equal(decoded, truth(frame, 1))


@pytest.mark.parametrize("compression", [COMPRESSION_7BIT, COMPRESSION_8BIT])
def test_the_written_file_holds_one_strip_per_frame(compression: int, tmp_path: Path) -> None:
    path = write_eer_movie(tmp_path / "m.eer", [electrons(10, seed=9)], SENSOR, compression)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        assert page.compression == compression and len(page.dataoffsets) == 1
        assert (page.imagelength, page.imagewidth) == SENSOR
