"""Filtered back projection (FBP): Fourier filters and the back projector.

The public face of the `_backproject` Cython kernel: checks shapes and dtypes (with
`prefect_beamline.ext.arguments`), allocates outputs and documents units. The kernel
releases the GIL and runs over slices in parallel on `n_threads` threads (None or 0:
every core).

Conventions, as scikit-image's `radon`/`iradon`: a sinogram is (angle, detector column);
angles in radians; slice pixel (i, j) of an N x N slice is at x = j - N//2,
y = N//2 - i (pixels, origin on the rotation axis) and projects to detector column
t = centre + x cos(theta) + y sin(theta). Values are line integrals of the linear
attenuation coefficient in pixel units, so slices are attenuation per pixel.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from scipy import fft

from prefect_beamline.ext._backproject import HAS_AVX2, backproject_kernel
from prefect_beamline.ext.arguments import (
    REAL_KINDS,
    kernel_threads,
    require_array,
    require_buffer,
    require_integer,
    require_number,
)

FilterName = Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"]
FILTER_NAMES: tuple[str, ...] = get_args(FilterName)
ROWS_PER_BLOCK = 16
SIMD_AVAILABLE: bool = HAS_AVX2  # the back projector uses AVX2 gathers


def padded_size(n_detector: int) -> int:
    """FFT length of the filter: the power of two >= 2 n_detector (at least 64).

    Zero padding to twice the width stops the circular convolution wrapping around.
    """
    n_detector = require_integer("n_detector", n_detector, minimum=1)
    return max(64, int(2 ** np.ceil(np.log2(2 * n_detector))))


def fourier_filter(size: int, name: FilterName = "ramp") -> np.ndarray:
    """The FBP filter's frequency response for an FFT of length `size` (float64).

    The ramp is the Fourier transform of the band-limited spatial ramp kernel of Kak &
    Slaney (ch. 3, eq. 61), not a bare |f|, so its zero frequency is right. The others
    multiply the ramp by a window: shepp-logan (sinc), cosine, hamming, hann.
    """
    if name not in FILTER_NAMES:
        raise ValueError(f"filter must be one of {', '.join(FILTER_NAMES)}, got {name!r}")
    size = require_integer("size", size, minimum=1)
    odd = np.concatenate(
        (np.arange(1, size // 2 + 1, 2, dtype=np.float64), np.arange(size // 2 - 1, 0, -2))
    )
    kernel = np.zeros(size)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * odd) ** 2
    response = 2.0 * np.real(fft.fft(kernel))
    if name == "shepp-logan":
        omega = np.pi * fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    elif name == "cosine":
        response *= fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    elif name == "hamming":
        response *= fft.fftshift(np.hamming(size))
    elif name == "hann":
        response *= fft.fftshift(np.hanning(size))
    return response


def filter_sinograms(
    sinograms: np.ndarray, name: FilterName = "ramp", *, n_threads: int | None = 1
) -> np.ndarray:
    """Filtered sinograms (slice, angle, detector + 1) as float32, the last column zero.

    `sinograms` is (slice, angle, detector) or one (angle, detector), of any real dtype.
    Filtering is by FFT along the detector (scipy.fft, GIL released, `n_threads`
    workers). The zero column is what `backproject` needs to interpolate at the edge.
    """
    require_array(
        "sinograms", sinograms, ndim=(2, 3), axes="((slice,) angle, detector)", kinds=REAL_KINDS
    )
    if sinograms.ndim == 2:
        sinograms = sinograms[np.newaxis]
    if sinograms.shape[2] < 1:
        raise ValueError(f"sinograms must hold at least 1 detector column, got {sinograms.shape}")
    n_threads = kernel_threads(n_threads)
    n_detector = sinograms.shape[2]
    size = padded_size(n_detector)
    response = fourier_filter(size, name)
    # The real part of a filtered real signal sees only the even part of the response
    # (the hamming and hann windows are off by one bin from even): keep that, and half
    # of it is all the real FFT needs.
    response = 0.5 * (response + np.roll(response[::-1], 1))
    response = response[: size // 2 + 1]
    spectrum = fft.rfft(sinograms, n=size, axis=2, workers=n_threads)
    spectrum *= response
    filtered = fft.irfft(spectrum, n=size, axis=2, workers=n_threads)
    out = np.zeros((*sinograms.shape[:2], n_detector + 1), dtype=np.float32)
    out[..., :n_detector] = filtered[..., :n_detector]
    return out


def backproject(
    filtered: np.ndarray,
    angles_rad: np.ndarray,
    centre: float,
    *,
    output_size: int | None = None,
    circle: bool = True,
    n_threads: int | None = 1,
    simd: bool = True,
) -> np.ndarray:
    """Slices (slice, N, N) float32 from filtered sinograms (slice, angle, detector + 1).

    `centre` is the detector column (pixels, 0-based, fractional) the rotation axis
    projects to. N defaults to the detector width. With `circle`, pixels outside the
    inscribed circle (radius N//2) are 0, as `iradon(circle=True)` leaves them. The sum
    is scaled by pi / (2 n_angles), so a uniformly sampled half turn gives attenuation
    per pixel. `simd=False` uses the portable inner loop even where AVX2 is available
    (tests compare the two).
    """
    require_buffer(
        "filtered",
        filtered,
        np.float32,
        ndim=3,
        axes="(slice, angle, detector + 1) from filter_sinograms",
    )
    if filtered.shape[1] < 1 or filtered.shape[2] < 2:
        raise ValueError(
            "filtered must hold at least 1 angle and 1 detector column (+ 1 zero column "
            f"from filter_sinograms), got shape {filtered.shape}"
        )
    angles = np.asarray(angles_rad, dtype=np.float64)
    if angles.shape != (filtered.shape[1],):
        raise ValueError(
            f"{angles.shape[0] if angles.ndim == 1 else angles.shape} angles for "
            f"{filtered.shape[1]} sinogram rows: angles_rad shape {angles.shape} differs "
            f"from filtered's (angle,) shape {(filtered.shape[1],)}"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles_rad must be finite (radians)")
    centre = require_number("centre", centre)
    n_threads = kernel_threads(n_threads)
    n_detector = filtered.shape[2] - 1
    if output_size is None:
        size = n_detector
    else:
        size = require_integer("output_size", output_size, minimum=1)
    out = np.empty((filtered.shape[0], size, size), dtype=np.float32)
    backproject_kernel(
        filtered,
        np.ascontiguousarray(np.cos(angles)),
        np.ascontiguousarray(np.sin(angles)),
        centre,
        out,
        bool(circle),
        ROWS_PER_BLOCK,
        n_threads,
        bool(simd),
    )
    out *= np.float32(np.pi / (2 * len(angles)))
    return out


def reconstruct(
    sinograms: np.ndarray,
    angles_rad: np.ndarray,
    centre: float,
    *,
    filter_name: FilterName = "ramp",
    output_size: int | None = None,
    circle: bool = True,
    n_threads: int | None = 1,
) -> np.ndarray:
    """Filtered back projection of sinograms (slice, angle, detector): (slice, N, N)."""
    filtered = filter_sinograms(sinograms, filter_name, n_threads=n_threads)
    return backproject(
        filtered,
        angles_rad,
        centre,
        output_size=output_size,
        circle=circle,
        n_threads=n_threads,
    )
