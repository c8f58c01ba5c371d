"""Spot finding fused with bitshuffle-LZ4 decoding: bit for bit what decoding, then the
unfused spot finder (the reference, itself checked against numpy) gives."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.spotfind import realistic_frame
from prefect_beamline.ext._spotfind import decode_threshold_kernel
from prefect_beamline.ext.bslz4 import BitshuffleLZ4Error, decode_bslz4
from prefect_beamline.ext.spotfind import (
    DispersionParameters,
    dispersion_threshold,
    find_spots,
    find_spots_bslz4,
)
from prefect_beamline.formats.raw_chunks import encode_bslz4

MAX_VALID = 60_000


def frame_of(dtype: type, shape: tuple[int, int] = (203, 517)) -> tuple[np.ndarray, np.ndarray]:
    """Spots on low counts, with what takes the spot finder's slower rows: overflowed
    pixels (above MAX_VALID), a few values too large for its packed sums, and (int32)
    negative flags. 203 x 517: the last block is partial, and 7 elements are left over."""
    frame, valid = realistic_frame(shape, seed=3)
    rng = np.random.default_rng(4)
    top = np.iinfo(dtype).max
    frame[rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6)] = top
    frame[rng.integers(0, shape[0], 3), rng.integers(0, shape[1], 3)] = min(top, 40_000)
    frame = frame.astype(dtype)
    if dtype == np.int32:
        frame[rng.integers(0, shape[0], 4), rng.integers(0, shape[1], 4)] = -1
    return frame, valid


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32])
@pytest.mark.parametrize("stripe_rows", [1, 5, 32, 1000])
def test_fused_strong_pixels_are_the_unfused_kernels(dtype: type, stripe_rows: int) -> None:
    frame, valid = frame_of(dtype)
    params = DispersionParameters()
    expected = dispersion_threshold(frame, valid, params, max_valid=MAX_VALID)
    image = np.full(frame.shape, 99, dtype=dtype)
    strong = np.zeros(frame.shape, dtype=np.uint8)
    status, bad_block, overloads = decode_threshold_kernel(
        np.frombuffer(encode_bslz4(frame), np.uint8),
        image,
        valid.view(np.uint8),
        strong,
        params.gain,
        params.sigma_background,
        params.sigma_strong,
        params.kernel_size,
        params.min_local,
        params.global_threshold,
        float(MAX_VALID),
        stripe_rows,
    )
    assert (status, bad_block) == (0, -1)
    np.testing.assert_array_equal(image, frame)
    np.testing.assert_array_equal(strong.view(bool), expected)
    assert expected.any()
    assert overloads == find_spots(frame, valid, max_valid=MAX_VALID).n_overloads > 0


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_fused_spots_are_decode_then_find_spots(dtype: type) -> None:
    frame, valid = frame_of(dtype, (515, 1030))
    chunk = encode_bslz4(frame)
    expected = find_spots(decode_bslz4(chunk, frame.shape, dtype), valid, max_valid=MAX_VALID)
    image = np.empty(frame.shape, dtype=dtype)
    spots = find_spots_bslz4(chunk, valid, image, max_valid=MAX_VALID)
    assert len(spots) == len(expected) > 100
    for field in ("x", "y", "intensity", "n_pixels", "peak"):
        np.testing.assert_array_equal(getattr(spots, field), getattr(expected, field))
    assert spots.n_overloads == expected.n_overloads
    np.testing.assert_array_equal(image, frame)
    reused = np.ones(frame.shape, dtype=bool)  # a buffer from another frame: overwritten
    again = find_spots_bslz4(chunk, valid, image, max_valid=MAX_VALID, strong=reused)
    np.testing.assert_array_equal(again.intensity, expected.intensity)


def test_a_corrupt_chunk_is_a_named_error() -> None:
    frame, valid = frame_of(np.uint32, (64, 100))
    chunk = encode_bslz4(frame)
    image = np.empty(frame.shape, dtype=np.uint32)
    with pytest.raises(BitshuffleLZ4Error, match="image 7: .*truncated"):
        find_spots_bslz4(chunk[:-40], valid, image, where="image 7")
    with pytest.raises(BitshuffleLZ4Error, match="left over"):
        find_spots_bslz4(chunk + b"xx", valid, image)
    with pytest.raises(BitshuffleLZ4Error, match="uncompressed size"):
        find_spots_bslz4(chunk, valid[:32], image[:32])
