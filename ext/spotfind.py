"""Spot finding on one detector frame: DIALS's dispersion threshold and spot centroids.

The public face of the `_spotfind` Cython kernel: checks shapes and dtypes, allocates
outputs and documents units. Kernels release the GIL, so frames can be processed on
several threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect_beamline.ext._spotfind import dispersion_threshold_kernel, label_spots_kernel

SUPPORTED_DTYPES = (np.uint16, np.uint32, np.int32, np.float32)


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
        if self.gain <= 0:
            raise ValueError(f"gain must be positive, got {self.gain}")
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size must be at least 1, got {self.kernel_size}")
        if self.min_local < 2:
            raise ValueError(f"min_local must be at least 2, got {self.min_local}")


@dataclass(frozen=True)
class Spots:
    """Spots of one frame. Positions in pixels with pixel centres at +0.5 (DIALS)."""

    x: np.ndarray
    y: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray
    peak: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _checked(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx), got shape {image.shape}")
    if image.dtype.type not in SUPPORTED_DTYPES:
        names = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
        raise ValueError(f"image dtype must be one of {names}, got {image.dtype}")
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool (True = valid pixel), got {mask.dtype}")
    return np.ascontiguousarray(image), np.ascontiguousarray(mask).view(np.uint8)


def dispersion_threshold(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    *,
    out: np.ndarray | None = None,
    n_threads: int = 1,
) -> np.ndarray:
    """Strong pixels of one frame (bool, same shape) by DIALS's dispersion threshold.

    A valid pixel is strong when the (2k+1)² window of valid pixels around it holds at
    least `min_local` pixels, its index of dispersion exceeds
    gain·(1 + sigma_background·√(2/(n−1))), and the pixel exceeds
    mean + sigma_strong·√(gain·mean) and `global_threshold`.
    """
    image, valid = _checked(image, mask)
    if out is None:
        out = np.empty(image.shape, dtype=np.bool_)
    elif out.shape != image.shape or out.dtype != np.bool_ or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous bool array of shape {image.shape}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
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
        int(n_threads),
    )
    return out


def find_spots(
    image: np.ndarray,
    mask: np.ndarray,
    params: DispersionParameters = DispersionParameters(),
    *,
    min_spot_size: int = 2,
    max_spot_size: int = 1000,
    n_threads: int = 1,
) -> Spots:
    """Spots of one frame: 8-connected strong pixels, with count-weighted centroids.

    `intensity` is the summed counts of a spot's strong pixels (as DIALS's spot finder
    reports it); spots outside [min_spot_size, max_spot_size] pixels are dropped, which
    rejects hot pixels (single strong pixels) with the default minimum of 2.
    """
    image, _ = _checked(image, mask)
    strong = dispersion_threshold(image, mask, params, n_threads=n_threads)
    n_pixels, sums, sum_x, sum_y, peak = label_spots_kernel(image, strong.view(np.uint8))
    keep = (n_pixels >= min_spot_size) & (n_pixels <= max_spot_size) & (sums > 0)
    sums = sums[keep]
    return Spots(
        x=sum_x[keep] / sums,
        y=sum_y[keep] / sums,
        intensity=sums,
        n_pixels=n_pixels[keep],
        peak=peak[keep],
    )
