"""Bitshuffle-LZ4 decoding of one chunk (one detector frame), off h5py's global lock.

The public face of the `_bslz4` kernel. A chunk is the bytes the HDF5 bitshuffle filter
(id 32008, LZ4) stores, read raw with `read_direct_chunk`, or the payload of a DECTRIS
Stream V2 "bslz4" compressed array (tag 56500): the same framing. Decoding releases the
GIL, so several frames decode at once on several threads of one process.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from prefect_beamline.ext._bslz4 import bslz4_decode_kernel
from prefect_beamline.ext.arguments import kernel_threads, output_buffer

HEADER_BYTES = 12
_ERRORS = {
    -1: "shorter than the 12-byte bitshuffle header",
    -2: "its header's uncompressed size differs from the frame's size",
    -3: "its header's block size is not a multiple of 8 elements (or above 1 MiB)",
    -4: "truncated: a block runs past the end of the chunk",
    -5: "corrupt: an LZ4 block is malformed or decodes to the wrong size",
    -6: "bytes are left over after the last block",
    -7: "out of memory",
}


class BitshuffleLZ4Error(ValueError):
    """A chunk that is not valid bitshuffle-LZ4 for the frame it should hold."""


def bslz4_header(chunk: bytes | memoryview | np.ndarray) -> tuple[int, int]:
    """(uncompressed bytes, block bytes) from a chunk's 12-byte big-endian header."""
    view = np.frombuffer(chunk, dtype=np.uint8)
    if view.size < HEADER_BYTES:
        raise BitshuffleLZ4Error(f"chunk of {view.size} bytes is {_ERRORS[-1]}")
    return int(view[:8].view(">u8")[0]), int(view[8:12].view(">u4")[0])


def decode_bslz4(
    chunk: bytes | memoryview | np.ndarray,
    shape: tuple[int, ...],
    dtype: DTypeLike,
    *,
    out: np.ndarray | None = None,
    n_threads: int | None = 1,
    where: str = "chunk",
) -> np.ndarray:
    """The array of `shape` and `dtype` that a bitshuffle-LZ4 `chunk` holds.

    `out`, if given, is a C-contiguous buffer of that shape and dtype, reused across
    frames; `n_threads` decode blocks in parallel (1 when frames already run in parallel
    on several threads). `where` names the chunk in errors (file, dataset, image).
    """
    dtype = np.dtype(dtype)
    out = output_buffer("out", out, shape, dtype, source="the frame")
    source = np.frombuffer(chunk, dtype=np.uint8)
    if source.size < HEADER_BYTES:
        raise BitshuffleLZ4Error(f"{where}: {source.size} bytes, {_ERRORS[-1]}")
    if out.nbytes == 0:
        return out
    status, bad_block = bslz4_decode_kernel(
        source, out.reshape(-1).view(np.uint8), dtype.itemsize, kernel_threads(n_threads)
    )
    raise_for_status(status, bad_block, source, out, where)
    return out


def raise_for_status(
    status: int, bad_block: int, source: np.ndarray, out: np.ndarray, where: str
) -> None:
    """BitshuffleLZ4Error naming what is wrong with `source` when a kernel that decoded
    it into `out` returned a nonzero status."""
    if not status:
        return
    detail = _ERRORS.get(status, f"error {status}")
    if status == -2:
        detail += f" ({bslz4_header(source)[0]} bytes, expected {out.nbytes})"
    block = f" (block {bad_block})" if bad_block >= 0 else ""
    raise BitshuffleLZ4Error(
        f"{where}: not bitshuffle-LZ4 for {out.shape} {out.dtype}: {detail}{block}"
    )
