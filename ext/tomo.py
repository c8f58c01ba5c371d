"""Tomography kernels: normalisation, ring filter, filtered back projection (FBP).

The public face of the `_tomo_preprocess` and `_backproject` Cython kernels: checks
shapes and dtypes, allocates outputs and documents units. Every kernel releases the GIL
and runs over sinograms (detector rows) in parallel on `n_threads` threads.

Conventions, as scikit-image's `radon`/`iradon`: a sinogram is (angle, detector column);
angles in radians; slice pixel (i, j) of an N x N slice is at x = j - N//2,
y = N//2 - i (pixels, origin on the rotation axis) and projects to detector column
t = centre + x cos(theta) + y sin(theta). Values are line integrals of the linear
attenuation coefficient in pixel units, so slices are attenuation per pixel.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from prefect_beamline.ext._backproject import HAS_AVX2, backproject_kernel
from prefect_beamline.ext._tomo_preprocess import normalise_kernel, ring_filter_kernel
from scipy import fft

FilterName = Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"]
FILTER_NAMES: tuple[str, ...] = get_args(FilterName)
RAW_DTYPES = (np.uint16, np.uint32, np.float32)
MIN_TRANSMISSION = 1e-6
ROWS_PER_BLOCK = 16
SIMD_AVAILABLE: bool = HAS_AVX2  # the back projector uses AVX2 gathers


def _float32_2d(array: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    if array.shape != shape:
        raise ValueError(f"{name} shape {array.shape} differs from the projections' {shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_threads(n_threads: int) -> None:
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")


def normalise(
    projections: np.ndarray,
    flat: np.ndarray,
    dark: np.ndarray,
    *,
    out: np.ndarray | None = None,
    min_transmission: float = MIN_TRANSMISSION,
    n_threads: int = 1,
) -> np.ndarray:
    """Sinograms (row, angle, column) of -log((projection - dark) / (flat - dark)).

    `projections` is (angle, row, column) as a detector writes them (uint16, uint32 or
    float32); `flat` and `dark` are the (row, column) means of the flat and dark frames.
    Transmissions at or below `min_transmission` (zero or negative counts) are clamped to
    it; pixels whose flat does not exceed their dark get 0.
    """
    if projections.ndim != 3:
        raise ValueError(f"projections must be 3-D (angle, row, column), got {projections.shape}")
    if projections.dtype.type not in RAW_DTYPES:
        names = ", ".join(np.dtype(t).name for t in RAW_DTYPES)
        raise ValueError(f"projections dtype must be one of {names}, got {projections.dtype}")
    if not 0.0 < min_transmission < 1.0:
        raise ValueError(f"min_transmission must be in (0, 1), got {min_transmission}")
    _check_threads(n_threads)
    n_angles, n_rows, n_columns = projections.shape
    flat32 = _float32_2d(flat, (n_rows, n_columns), "flat")
    dark32 = _float32_2d(dark, (n_rows, n_columns), "dark")
    shape = (n_rows, n_angles, n_columns)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    normalise_kernel(
        np.ascontiguousarray(projections),
        flat32,
        dark32,
        out,
        float(min_transmission),
        int(n_threads),
    )
    return out


def ring_filter(sinograms: np.ndarray, *, width: int = 9, n_threads: int = 1) -> np.ndarray:
    """Remove ring artefacts from sinograms (row, angle, column), in place; returns them.

    Each detector column's mean over angles minus the median of the means of the
    `width` columns around it (odd, edges repeated) is subtracted from that column: a
    column whose response differs from the flat field (a stripe in the sinogram, a ring
    in the slice) loses its offset, while features of the sample, which move across
    columns as the sample turns, are left alone.
    """
    if sinograms.ndim != 3 or sinograms.dtype != np.float32 or not sinograms.flags.c_contiguous:
        raise ValueError(
            "sinograms must be a C-contiguous float32 array (row, angle, column), got "
            f"{sinograms.dtype} {sinograms.shape}"
        )
    if width < 3 or width % 2 == 0:
        raise ValueError(f"ring filter width must be an odd number >= 3, got {width}")
    _check_threads(n_threads)
    ring_filter_kernel(sinograms, int(width // 2), int(n_threads))
    return sinograms


def padded_size(n_detector: int) -> int:
    """FFT length of the filter: the power of two >= 2 n_detector (at least 64).

    Zero padding to twice the width stops the circular convolution wrapping around.
    """
    return max(64, int(2 ** np.ceil(np.log2(2 * n_detector))))


def fourier_filter(size: int, name: FilterName = "ramp") -> np.ndarray:
    """The FBP filter's frequency response for an FFT of length `size` (float64).

    The ramp is the Fourier transform of the band-limited spatial ramp kernel of Kak &
    Slaney (ch. 3, eq. 61), not a bare |f|, so its zero frequency is right. The others
    multiply the ramp by a window: shepp-logan (sinc), cosine, hamming, hann.
    """
    if name not in FILTER_NAMES:
        raise ValueError(f"filter must be one of {', '.join(FILTER_NAMES)}, got {name!r}")
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
    sinograms: np.ndarray, name: FilterName = "ramp", *, n_threads: int = 1
) -> np.ndarray:
    """Filtered sinograms (slice, angle, detector + 1) as float32, the last column zero.

    Filtering is by FFT along the detector (scipy.fft, GIL released, `n_threads`
    workers). The zero column is what `backproject` needs to interpolate at the edge.
    """
    if sinograms.ndim == 2:
        sinograms = sinograms[np.newaxis]
    if sinograms.ndim != 3:
        raise ValueError(f"sinograms must be (slice, angle, detector), got {sinograms.shape}")
    _check_threads(n_threads)
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
    n_threads: int = 1,
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
    if filtered.ndim != 3 or filtered.dtype != np.float32 or not filtered.flags.c_contiguous:
        raise ValueError(
            "filtered must be a C-contiguous float32 array (slice, angle, detector + 1) "
            f"from filter_sinograms, got {filtered.dtype} {filtered.shape}"
        )
    angles = np.asarray(angles_rad, dtype=np.float64)
    if angles.shape != (filtered.shape[1],):
        raise ValueError(
            f"{angles.shape[0] if angles.ndim == 1 else angles.shape} angles for "
            f"{filtered.shape[1]} sinogram rows"
        )
    if not np.isfinite(centre):
        raise ValueError(f"centre of rotation must be finite, got {centre}")
    _check_threads(n_threads)
    n_detector = filtered.shape[2] - 1
    size = output_size or n_detector
    out = np.empty((filtered.shape[0], size, size), dtype=np.float32)
    backproject_kernel(
        filtered,
        np.ascontiguousarray(np.cos(angles)),
        np.ascontiguousarray(np.sin(angles)),
        float(centre),
        out,
        bool(circle),
        ROWS_PER_BLOCK,
        int(n_threads),
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
    n_threads: int = 1,
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
