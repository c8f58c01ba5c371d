"""Plain numpy bitshuffle-LZ4 encoding, obviously right and slow: each block's bits
transposed with `np.unpackbits`, each LZ4 block one literal run (a valid LZ4 block).

The kernel's decoder must invert it, independently of hdf5plugin's C encoder.
"""

from __future__ import annotations

import numpy as np


def bitshuffle_block(elements: np.ndarray) -> bytes:
    """Row 8 * byte + bit of the result holds that bit of every element, LSB first."""
    n, size = elements.shape[0], elements.dtype.itemsize
    bits = np.unpackbits(elements.view(np.uint8).reshape(n, size), axis=1, bitorder="little")
    return np.packbits(bits.T.reshape(8 * size, n), axis=1, bitorder="little").tobytes()


def lz4_literals(data: bytes) -> bytes:
    """An LZ4 block holding `data` as one literal run (token, length bytes, literals)."""
    length = len(data)
    if length < 15:
        return bytes([length << 4]) + data
    extra, rest = [], length - 15
    while rest >= 255:
        extra.append(255)
        rest -= 255
    extra.append(rest)
    return bytes([0xF0, *extra]) + data


def reference_encode(array: np.ndarray, block_elements: int) -> bytes:
    """`array` in bitshuffle's HDF5 framing with literal-only LZ4 blocks."""
    flat = np.ascontiguousarray(array).reshape(-1)
    size = flat.dtype.itemsize
    out = [flat.nbytes.to_bytes(8, "big"), (block_elements * size).to_bytes(4, "big")]
    n = flat.size
    leftover = n % block_elements
    lengths = [block_elements] * (n // block_elements) + (
        [leftover - leftover % 8] if leftover - leftover % 8 else []
    )
    start = 0
    for length in lengths:
        block = lz4_literals(bitshuffle_block(flat[start : start + length]))
        out += [len(block).to_bytes(4, "big"), block]
        start += length
    out.append(flat[start:].tobytes())
    return b"".join(out)
