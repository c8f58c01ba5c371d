"""Spot finding on one detector frame: DIALS's dispersion threshold and spot centroids.

The public face of the `_spotfind` Cython kernel: checks shapes and dtypes (with
`prefect_beamline.ext.arguments`), allocates outputs and documents units. Kernels
release the GIL, so frames can be processed on several threads at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prefect_beamline.ext._spotfind import (
    decode_threshold_kernel,
    dispersion_threshold_kernel,
    label_spots_kernel,
)
from prefect_beamline.ext.arguments import (
    kernel_threads,
    output_buffer,
    require_array,
    require_integer,
    require_number,
    require_same_shape,
)
from prefect_beamline.ext.bslz4 import HEADER_BYTES, BitshuffleLZ4Error, raise_for_status

SUPPORTED_DTYPES = (np.uint16, np.uint32, np.int32, np.float32)
# Rows thresholded per stripe when decoding and spot finding are fused: with the rows
# their windows reach, a stripe of a 16M frame (17 kB a row) stays in a core's L2.
STRIPE_ROWS = 32


@dataclass(frozen=True)
class DispersionParameters:
    """Settings of DIALS's dispersion threshold (names as in DIALS's phil)."""

    gain: float = 1.0
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    kernel_size: int = 3
    min_local: int = 2
    global_threshold: float = 0.0

    def __post_init__(self) -> None:
        require_number("gain", self.gain, above=0.0)
        require_integer("kernel_size", self.kernel_size, minimum=1)
        require_integer("min_local", self.min_local, minimum=2)
        for name in ("sigma_background", "sigma_strong", "global_threshold"):
            require_number(name, getattr(self, name))


@dataclass(frozen=True)
class Spots:
    """Spots of one frame. Positions in pixels with pixel centres at +0.5 (DIALS)."""

    x: np.ndarray
    y: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray
    peak: np.ndarray
    # Valid pixels above max_valid (overflowed or saturated), masked for this frame.
    n_overloads: int = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _checked(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame and its mask (True = valid pixel) as the kernels take them."""
    require_array("image", image, ndim=2, axes="(ny, nx)", dtypes=SUPPORTED_DTYPES)
    require_array("mask", mask, ndim=2, axes="(ny, nx)", dtypes=(np.bool_,))
    require_same_shape(image=image, mask=mask)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask).view(np.uint8)


def _checked_params(params: DispersionParameters) -> DispersionParameters:
    if not isinstance(params, DispersionParameters):
        raise TypeError(f"params must be DispersionParameters, got {type(params).__name__}")
    return params


def _kernel_max_valid(image: np.ndarray, max_valid: float | None) -> float:
    """`max_valid` as the kernel takes it: whole counts for integer frames; none = inf."""
    if max_valid is None:
        return math.inf
    value = require_number("max_valid", max_valid, at_least=0.0)
    return float(math.floor(value)) if image.dtype.kind in "iu" else float(value)


def _threshold_into(
    image: np.ndarray,
    valid: np.ndarray,
    params: DispersionParameters,
    max_valid: float | None,
    out: np.ndarray,
    n_threads: int | None,
) -> int:
    """Run the threshold kernel into `out`; the number of overloads it masked."""
    params = _checked_params(params)
    threads = kernel_threads(n_threads)
    return int(
        dispersion_threshold_kernel(
            image,
            valid,
            out.view(np.uint8),
            float(params.gain),
            float(params.sigma_background),
            float(params.sigma_strong),
            int(params.kernel_size),
            int(params.min_local),
            float(params.global_threshold),
            _kernel_max_valid(image, max_valid),
            threads,
        )
    )


def dispersion_threshold(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    *,
    max_valid: float | None = None,
    out: np.ndarray | None = None,
    n_threads: int | None = 1,
) -> np.ndarray:
    """Strong pixels of one frame (bool, same shape) by DIALS's dispersion threshold.

    A valid pixel is strong when the (2k+1)² window of valid pixels around it holds at
    least `min_local` pixels, its index of dispersion exceeds
    gain·(1 + sigma_background·√(2/(n−1))), and the pixel exceeds
    mean + sigma_strong·√(gain·mean) and `global_threshold`. `image` is (ny, nx)
    uint16, uint32, int32 or float32 counts; `mask` bool, True = valid pixel;
    `max_valid` the largest usable count (pixels above it, an Eiger's overflow value or
    beyond saturation, are masked for this frame; for int32 frames negative values too,
    as detectors flag pixels with them; None masks nothing); `out` an optional
    C-contiguous bool buffer of the image's shape; `n_threads` None or 0 for every core.
    """
    image, valid = _checked(image, mask)
    out = output_buffer("out", out, image.shape, np.bool_, source="image")
    _threshold_into(image, valid, params, max_valid, out, n_threads)
    return out


def find_spots(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    *,
    max_valid: float | None = None,
    min_spot_size: int = 2,
    max_spot_size: int = 1000,
    n_threads: int | None = 1,
) -> Spots:
    """Spots of one frame: 8-connected strong pixels, with count-weighted centroids.

    `intensity` is the summed counts of a spot's strong pixels (as DIALS's spot finder
    reports it); spots outside [min_spot_size, max_spot_size] pixels are dropped, which
    rejects hot pixels (single strong pixels) with the default minimum of 2. Pixels
    above `max_valid` are masked (see `dispersion_threshold`), so they are never strong
    and never part of an intensity; `n_overloads` counts them.
    """
    image, valid = _checked(image, mask)
    min_spot_size = require_integer("min_spot_size", min_spot_size, minimum=1)
    max_spot_size = require_integer("max_spot_size", max_spot_size, minimum=min_spot_size)
    strong = np.empty(image.shape, dtype=np.bool_)
    n_overloads = _threshold_into(image, valid, params, max_valid, strong, n_threads)
    return _spots(image, strong, n_overloads, min_spot_size, max_spot_size)


def find_spots_bslz4(
    chunk: bytes | memoryview | np.ndarray,
    mask: np.ndarray,
    image: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    *,
    max_valid: float | None = None,
    min_spot_size: int = 2,
    max_spot_size: int = 1000,
    strong: np.ndarray | None = None,
    where: str = "chunk",
) -> Spots:
    """`find_spots` on the frame a bitshuffle-LZ4 `chunk` holds, decoded into `image`
    (a C-contiguous uint16, uint32 or int32 buffer of the frame's shape and dtype) on
    one thread, fused: rows are thresholded stripe by stripe as they are decoded, still
    in cache. The same spots as decoding, then `find_spots` (the tests check it).
    `strong`, if given, is a bool buffer of the frame's shape for the strong pixels,
    reused across frames (a new 16 Mpixel mask costs page faults on every frame).
    BitshuffleLZ4Error for a chunk that is not this frame."""
    require_array("image", image, ndim=2, axes="(ny, nx)", dtypes=SUPPORTED_DTYPES[:3])
    if not image.flags.c_contiguous or not image.flags.writeable:
        raise ValueError("image must be a writeable C-contiguous buffer")
    _, valid = _checked(image, mask)
    params = _checked_params(params)
    min_spot_size = require_integer("min_spot_size", min_spot_size, minimum=1)
    max_spot_size = require_integer("max_spot_size", max_spot_size, minimum=min_spot_size)
    source = np.frombuffer(chunk, dtype=np.uint8)
    if source.size < HEADER_BYTES:
        raise BitshuffleLZ4Error(f"{where}: {source.size} bytes, shorter than the header")
    strong = output_buffer("strong", strong, image.shape, np.bool_, source="image")
    if image.size == 0:
        return _spots(image, strong, 0, min_spot_size, max_spot_size)
    status, bad_block, n_overloads = decode_threshold_kernel(
        source,
        image,
        valid,
        strong.view(np.uint8),
        float(params.gain),
        float(params.sigma_background),
        float(params.sigma_strong),
        int(params.kernel_size),
        int(params.min_local),
        float(params.global_threshold),
        _kernel_max_valid(image, max_valid),
        STRIPE_ROWS,
    )
    raise_for_status(status, bad_block, source, image, where)
    return _spots(image, strong, int(n_overloads), min_spot_size, max_spot_size)


def _spots(
    image: np.ndarray, strong: np.ndarray, n_overloads: int, min_spot_size: int, max_spot_size: int
) -> Spots:
    """The spots of a frame's strong-pixel mask: components, sizes kept, centroids."""
    n_pixels, sums, sum_x, sum_y, peak = label_spots_kernel(image, strong.view(np.uint8))
    keep = (n_pixels >= min_spot_size) & (n_pixels <= max_spot_size) & (sums > 0)
    sums = sums[keep]
    return Spots(
        x=sum_x[keep] / sums,
        y=sum_y[keep] / sums,
        intensity=sums,
        n_pixels=n_pixels[keep],
        peak=peak[keep],
        n_overloads=n_overloads,
    )
