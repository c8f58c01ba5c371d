"""EER frames rendered into count images: the typed face of the `_eer` Cython kernel.

An EER movie (Thermo Fisher Falcon 4/4i, Selectris) stores every electron of hundreds
of very short frames; processing sums groups of them into a few dozen dose fractions,
rendered on the sensor's grid (4K) or with one bit of sub-pixel position (8K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefect_beamline.ext._eer import OVERRUN, SATURATED, TRUNCATED, eer_render_kernel
from prefect_beamline.ext.arguments import require_array, require_buffer, require_integer

# Upsampling per axis (1: the sensor's 4K grid, 2: 8K, 4: 16K) as bits of sub-pixel kept.
UPSAMPLING_BITS = {1: 0, 2: 1, 4: 2}


@dataclass(frozen=True)
class EERCode:
    """How one EER file's bitstreams are coded (TIFF compression 65000, 65001, 65002)."""

    rle_bits: int = 7
    sub_bits: int = 2  # per axis
    symbol_after_skip: bool = False  # 65000 (8-bit prototype files) spends one anyway

    def __post_init__(self) -> None:
        require_integer("rle_bits", self.rle_bits, minimum=2)
        require_integer("sub_bits", self.sub_bits, minimum=1)
        if self.rle_bits > 16 or self.sub_bits > 4:
            raise ValueError(
                f"EER codes of {self.rle_bits} run bits and {self.sub_bits} sub-pixel bits "
                "are not supported (at most 16 and 4)"
            )


class EERDecodeError(ValueError):
    """A bitstream that does not decode into its frame (the message says how)."""


def eer_render(
    bitstream: np.ndarray,
    sensor_shape: tuple[int, int],
    code: EERCode,
    out: np.ndarray,
    upsampling: int = 1,
) -> int:
    """Add the electrons of one EER frame to `out`; return how many there were.

    `bitstream` is the frame's bytes (uint8, 1-D); `sensor_shape` (height, width) the
    frame's pixels as its TIFF page says; `out` a uint16 (height, width) x `upsampling`
    image (1, 2 or 4; at most 2^sub_bits) that frames of a group are summed into.
    """
    bitstream = require_buffer("bitstream", bitstream, np.uint8, ndim=1)
    height = require_integer("height", sensor_shape[0], minimum=1)
    width = require_integer("width", sensor_shape[1], minimum=1)
    if upsampling not in UPSAMPLING_BITS or UPSAMPLING_BITS[upsampling] > code.sub_bits:
        raise ValueError(
            f"upsampling must be 1, 2 or 4 (at most 2^{code.sub_bits}), got {upsampling}"
        )
    require_array("out", out, ndim=2, axes="(y, x)", dtypes=(np.uint16,), contiguous=True)
    expected = (height * upsampling, width * upsampling)
    if out.shape != expected:
        raise ValueError(
            f"out shape {out.shape} differs from the rendered frame's shape {expected}"
        )
    result = int(
        eer_render_kernel(
            bitstream,
            width,
            height,
            code.rle_bits,
            code.sub_bits,
            code.symbol_after_skip,
            UPSAMPLING_BITS[upsampling],
            out,
        )
    )
    if result == TRUNCATED:
        raise EERDecodeError("bitstream ends before the frame's pixels are covered (truncated)")
    if result == OVERRUN:
        raise EERDecodeError("a run goes past the frame's last pixel (corrupt bitstream)")
    if result == SATURATED:
        raise EERDecodeError("more than 65535 electrons in one pixel of a group")
    return result
