"""The bitshuffle-LZ4 decoder (`ext/bslz4.py`) against hdf5plugin's encoder, the
`bitshuffle` package's encoder and decoder, and a numpy reference encoder, on frame sizes
that exercise full, partial and leftover blocks."""

from __future__ import annotations

import threading

import bitshuffle
import numpy as np
import pytest

from prefect_beamline.ext.bslz4 import HEADER_BYTES, BitshuffleLZ4Error, bslz4_header, decode_bslz4
from prefect_beamline.formats.raw_chunks import encode_bslz4
from tests.kernels.bslz4_reference import reference_encode

DTYPES = [np.uint8, np.uint16, np.uint32, np.int32, np.float32]
# (ny, nx): one element, fewer than 8, under one block, blocks + a partial block + a
# leftover of fewer than 8 elements, and an Eiger module.
SHAPES = [(1, 1), (1, 7), (13, 17), (129, 131), (514, 1030)]


def frame_of(shape: tuple[int, int], dtype: type, seed: int = 0) -> np.ndarray:
    """Low counts with a few bright and all-ones pixels, as an Eiger frame has."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(0.5, shape).astype(dtype)
    frame.flat[rng.integers(0, frame.size, 1 + frame.size // 500)] = np.iinfo(
        np.uint8 if dtype == np.uint8 else np.uint16
    ).max
    if np.dtype(dtype).kind == "u":
        frame.flat[0] = np.iinfo(dtype).max  # the overflow value of a masked pixel
    return frame


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_decodes_what_hdf5plugin_encodes(shape: tuple[int, int], dtype: type) -> None:
    frame = frame_of(shape, dtype)
    decoded = decode_bslz4(encode_bslz4(frame), shape, dtype)
    np.testing.assert_array_equal(decoded, frame)


@pytest.mark.parametrize("block_elements", [8, 64, 1000, 4096])
def test_decodes_other_block_sizes(block_elements: int) -> None:
    frame = frame_of((97, 101), np.uint32, seed=1)
    chunk = encode_bslz4(frame, block_elements=block_elements)
    assert bslz4_header(chunk) == (frame.nbytes, block_elements * 4)
    np.testing.assert_array_equal(decode_bslz4(chunk, frame.shape, np.uint32), frame)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
@pytest.mark.parametrize("shape", [(1, 9), (31, 67), (64, 256)])
def test_inverts_the_numpy_reference_encoding(shape: tuple[int, int], dtype: type) -> None:
    frame = np.random.default_rng(2).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    chunk = reference_encode(frame, block_elements=256)
    np.testing.assert_array_equal(decode_bslz4(chunk, shape, dtype), frame)


def contents(kind: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """Frames that take each path of the decoder: every byte plane busy (random, all
    at the maximum), none (zeros), the low planes only (low counts), and runs that LZ4
    encodes as matches of every short period (rows repeating every 1 to 24 bytes)."""
    rng = np.random.default_rng(5)
    top = np.iinfo(dtype).max
    if kind == "random":
        return rng.integers(0, top, shape, dtype=dtype, endpoint=True)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "max":
        return np.full(shape, top, dtype)
    if kind == "low":
        return rng.poisson(0.5, shape).astype(dtype)
    # Element period 8 p: each bit row of a block repeats every p bytes.
    flat = np.concatenate([np.tile(rng.integers(0, 4, 8 * period), 6) for period in range(1, 25)])
    return np.resize(flat, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("kind", ["random", "zeros", "max", "low", "periodic"])
@pytest.mark.parametrize("shape", [(1, 3), (37, 41), (131, 129)])
def test_matches_the_bitshuffle_package_and_the_numpy_reference(
    kind: str, shape: tuple[int, int], dtype: type
) -> None:
    """The package's own chunks (its header is the HDF5 filter's) decode to the frame,
    as the package decodes them; so do the reference's literal-only chunks."""
    frame = contents(kind, shape, dtype)
    header = frame.nbytes.to_bytes(8, "big") + (0).to_bytes(4, "big")
    chunk = header + bitshuffle.compress_lz4(frame.reshape(-1)).tobytes()
    peer = bitshuffle.decompress_lz4(
        np.frombuffer(chunk, np.uint8)[HEADER_BYTES:], shape, np.dtype(dtype)
    )
    np.testing.assert_array_equal(peer, frame)
    np.testing.assert_array_equal(decode_bslz4(chunk, shape, dtype), frame)
    literal = reference_encode(frame, block_elements=1024)
    np.testing.assert_array_equal(decode_bslz4(literal, shape, dtype), frame)


def test_parallel_blocks_and_a_reused_buffer_give_the_same_frame() -> None:
    frame = frame_of((514, 1030), np.uint32, seed=3)
    chunk = encode_bslz4(frame)
    out = np.full(frame.shape, 7, dtype=np.uint32)
    assert decode_bslz4(chunk, frame.shape, np.uint32, out=out, n_threads=4) is out
    np.testing.assert_array_equal(out, frame)


def test_threads_decode_frames_at_once() -> None:
    frames = [frame_of((257, 263), np.uint32, seed=seed) for seed in range(8)]
    chunks = [encode_bslz4(frame) for frame in frames]
    results: dict[int, np.ndarray] = {}

    def decode(index: int) -> None:
        results[index] = decode_bslz4(chunks[index], frames[index].shape, np.uint32)

    threads = [threading.Thread(target=decode, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(results[index], frame)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda chunk: chunk[:5], "shorter than the 12-byte"),
        (lambda chunk: chunk[:-40], "truncated"),
        (lambda chunk: chunk + b"xx", "left over"),
        (lambda chunk: (123).to_bytes(8, "big") + chunk[8:], "uncompressed size"),
        (lambda chunk: chunk[:16] + b"\x00\x00\x00" + chunk[19:], "corrupt"),
        (lambda chunk: chunk[:8] + (12).to_bytes(4, "big") + chunk[12:], "block size"),
    ],
)
def test_bad_chunks_are_named_errors(mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = frame_of((64, 100), np.uint32, seed=4)
    with pytest.raises(BitshuffleLZ4Error, match=message) as error:
        decode_bslz4(mangle(encode_bslz4(frame)), frame.shape, np.uint32, where="f.h5 image 3")
    assert "f.h5 image 3" in str(error.value)


def test_wrong_output_shape_is_refused() -> None:
    chunk = encode_bslz4(frame_of((8, 8), np.uint16))
    with pytest.raises(ValueError, match="out shape"):
        decode_bslz4(chunk, (8, 8), np.uint16, out=np.empty((4, 8), np.uint16))
