"""Plain-Python reference of EER rendering: one code at a time, obviously right, slow.

Follows the format as RELION's renderer reads it: least-significant-bit-first codes of a
run length, then (unless the run is the largest value, which carries no electron) a
sub-pixel symbol of x then y, each with its top bit inverted.
"""

from __future__ import annotations

import numpy as np

from prefect_beamline.ext.eer import EERCode


def reference_render(
    bitstream: bytes, sensor_shape: tuple[int, int], code: EERCode, upsampling: int = 1
) -> np.ndarray:
    """The frame's electrons counted on a grid `upsampling` times the sensor's."""
    height, width = sensor_shape
    bits = int.from_bytes(bitstream, "little")
    n_bits = len(bitstream) * 8
    image = np.zeros((height * upsampling, width * upsampling), dtype=np.uint16)
    skip, flip = (1 << code.rle_bits) - 1, 1 << (code.sub_bits - 1)
    keep = upsampling.bit_length() - 1  # sub-pixel bits used per axis
    position, cursor = 0, 0

    def take(count: int) -> int:
        nonlocal cursor
        if cursor + count > n_bits:
            raise ValueError("truncated")
        value = (bits >> cursor) & ((1 << count) - 1)
        cursor += count
        return value

    while True:
        run = take(code.rle_bits)
        position += run
        if position == height * width:
            return image
        if run == skip:
            if code.symbol_after_skip:
                take(2 * code.sub_bits)
            continue
        symbol = take(2 * code.sub_bits)
        x_sub = (symbol & ((1 << code.sub_bits) - 1)) ^ flip
        y_sub = (symbol >> code.sub_bits) ^ flip
        row, column = divmod(position, width)
        x = column * upsampling + (x_sub >> (code.sub_bits - keep))
        y = row * upsampling + (y_sub >> (code.sub_bits - keep))
        image[y, x] += 1
        position += 1
        if position == height * width:
            return image
