"""Fourier-domain reconstruction (gridrec): FBP's slices in O(N² log N) per slice.

The public face of the `_gridrec` Cython kernel. Same conventions, filters and scaling
as `prefect_beamline.ext.backproject` (scikit-image's geometry; attenuation per pixel):
it computes the same sum as filtered back projection, with the projections interpolated
exactly (trigonometric interpolation) instead of linearly, as a non-uniform FFT:

1. each projection, zero padded to the grid size G = `oversampling` x N, is Fourier
   transformed (scipy.fft, float32) and multiplied by the FBP filter, the centre's phase
   and FBP's scale;
2. by the Fourier slice theorem those spectra are samples of the slice's 2-D transform on
   polar lines; the kernel spreads each onto the W x W nearest points of a Cartesian G x G
   grid with a Kaiser-Bessel kernel (threads own bands of grid rows, GIL released);
3. an inverse 2-D FFT, pruned to the rows the samples reach and the N columns the slice
   needs, gives the image times the kernel's Fourier transform, which the last step
   divides out (de-apodisation) while it crops the N x N slice.

Accuracy: the kernel width W and the oversampling set the interpolation error (Beatty,
Nishimura & Pauly, IEEE TMI 24, 2005); at the defaults (W = 6, G = 2N) it is ~1e-4 of
the slice's range against the exact non-uniform sum (`tests/kernels/gridrec_reference.py`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft

from prefect_beamline.ext._gridrec import crop_kernel, grid_kernel
from prefect_beamline.ext.arguments import (
    REAL_KINDS,
    kernel_threads,
    require_array,
    require_integer,
    require_number,
)
from prefect_beamline.ext.backproject import FilterName, fourier_filter

DEFAULT_OVERSAMPLING = 2.0
DEFAULT_KERNEL_WIDTH = 6
MAX_KERNEL_WIDTH = 16  # MAX_WIDTH of _gridrec.pyx
TABLE_DENSITY = 2048  # kernel table entries per grid unit
ROWS_PER_BAND = 32


def grid_size(size: int, n_detector: int, oversampling: float = DEFAULT_OVERSAMPLING) -> int:
    """The grid (and projection FFT) length: a fast FFT size >= oversampling x the larger
    of the slice and the detector, even."""
    wanted = int(np.ceil(oversampling * max(size, n_detector)))
    return int(fft.next_fast_len(wanted + wanted % 2, real=False))


def kaiser_bessel_beta(width: int, oversampling: float) -> float:
    """The Kaiser-Bessel shape for a kernel of `width` grid points at `oversampling`
    (Beatty, Nishimura & Pauly 2005, eq. 5): least aliasing into the slice."""
    return float(np.pi * np.sqrt((width / oversampling) ** 2 * (oversampling - 0.5) ** 2 - 0.8))


def kaiser_bessel(offset: np.ndarray, width: int, beta: float) -> np.ndarray:
    """The kernel at `offset` grid units: I0(beta sqrt(1 - (2 offset / W)²)), 0 beyond W/2."""
    ratio = np.clip(1.0 - (2.0 * np.asarray(offset, dtype=np.float64) / width) ** 2, 0.0, None)
    return np.where(np.abs(offset) <= width / 2, np.i0(beta * np.sqrt(ratio)), 0.0)


def deapodisation(positions: np.ndarray, size: int, width: int, beta: float) -> np.ndarray:
    """The kernel's Fourier transform at image `positions` (pixels) of a `size` grid:
    the factor the gridded image carries, by Gauss-Legendre quadrature (the kernel is
    smooth on its support, so 4 W nodes are exact to float precision)."""
    nodes, node_weights = np.polynomial.legendre.leggauss(4 * width + 16)
    offsets = 0.5 * width * nodes
    values = kaiser_bessel(offsets, width, beta) * node_weights * 0.5 * width
    phase = 2.0 * np.pi * np.outer(np.asarray(positions, dtype=np.float64), offsets) / size
    return np.asarray(np.cos(phase) @ values)


@lru_cache(maxsize=8)
def _kernel_table(width: int, beta: float) -> np.ndarray:
    offsets = np.arange(TABLE_DENSITY * width // 2 + 2) / TABLE_DENSITY
    return np.asarray(kaiser_bessel(offsets, width, beta), dtype=np.float32)


@lru_cache(maxsize=8)
def _crop_factors(
    size: int, grid: int, width: int, beta: float, row_offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source row, row phase and de-apodisation scales of an N x N crop of the image."""
    half = size // 2
    x = np.arange(size) - half
    y = half - np.arange(size)
    correction = 1.0 / deapodisation(x, grid, width, beta)
    # Grid row r holds v = r - row_offset: the inverse FFT over rows carries
    # exp(2 pi i row_offset y / G), which the phase takes out.
    phase = np.exp(-2j * np.pi * row_offset * y / grid).astype(np.complex64)
    source_rows = np.mod(y, grid).astype(np.intp)
    row_scale = 2.0 * correction  # the kernel's transform is even: c(y) = c(i - N//2)
    return (
        source_rows,
        phase.view(np.float32),
        np.asarray(row_scale, dtype=np.float32),
        np.asarray(correction, dtype=np.float32),
    )


def radial_weights(grid: int, n_angles: int, centre: float, filter_name: FilterName) -> np.ndarray:
    """Weight of each radial frequency k = 0..G/2 (complex64): the FBP filter, the
    frequency response of linear interpolation, the phase that moves the rotation axis to
    the origin, FBP's pi / (2 n_angles) and the inverse FFT's 1/G; halved at k = 0 and
    G/2, which the real part counts twice.

    The linear interpolation's response, sinc²(k / G), gives the slices the resolution of
    the back projector's (and iradon's) without their aliasing: interpolated exactly,
    unwindowed, the ramp's edge ringing raises the error against the phantom by a third.
    """
    k = np.arange(grid // 2 + 1)
    response = fourier_filter(grid, filter_name)
    response = 0.5 * (response + np.roll(response[::-1], 1))[: grid // 2 + 1]
    response *= np.sinc(k / grid) ** 2
    weights = response * np.exp(2j * np.pi * k * centre / grid) * np.pi / (2 * n_angles * grid)
    weights[0] *= 0.5
    weights[-1] *= 0.5
    return weights.astype(np.complex64)


def reconstruct_fourier(
    sinograms: np.ndarray,
    angles_rad: np.ndarray,
    centre: float,
    *,
    filter_name: FilterName = "ramp",
    output_size: int | None = None,
    circle: bool = True,
    n_threads: int | None = 1,
    oversampling: float = DEFAULT_OVERSAMPLING,
    kernel_width: int = DEFAULT_KERNEL_WIDTH,
) -> np.ndarray:
    """Slices (slice, N, N) float32 from sinograms (slice, angle, detector) by gridrec.

    Arguments as `backproject.reconstruct`; `oversampling` (grid size / N, 1.25..4) and
    `kernel_width` (grid points, 2..16) trade speed for interpolation accuracy.
    """
    require_array(
        "sinograms", sinograms, ndim=(2, 3), axes="((slice,) angle, detector)", kinds=REAL_KINDS
    )
    if sinograms.ndim == 2:
        sinograms = sinograms[np.newaxis]
    n_slices, n_angles, n_detector = sinograms.shape
    if n_angles < 1 or n_detector < 1:
        raise ValueError(
            f"sinograms must hold at least 1 angle and 1 detector column, got {sinograms.shape}"
        )
    angles = np.asarray(angles_rad, dtype=np.float64)
    if angles.shape != (n_angles,):
        raise ValueError(
            f"angles_rad shape {angles.shape} differs from sinograms' (angle,) shape {(n_angles,)}"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles_rad must be finite (radians)")
    centre = require_number("centre", centre)
    n_threads = kernel_threads(n_threads)
    size = (
        n_detector
        if output_size is None
        else require_integer("output_size", output_size, minimum=1)
    )
    oversampling = require_number("oversampling", oversampling, at_least=1.25)
    if oversampling > 4:
        raise ValueError(f"oversampling must be at most 4, got {oversampling}")
    width = require_integer("kernel_width", kernel_width, minimum=2)
    if width > MAX_KERNEL_WIDTH:
        raise ValueError(f"kernel_width must be at most {MAX_KERNEL_WIDTH}, got {width}")

    grid = grid_size(size, n_detector, oversampling)
    beta = kaiser_bessel_beta(width, grid / size)
    table = _kernel_table(width, beta)
    row_offset = width // 2 + 1
    n_rows = grid // 2 + 2 * row_offset + 1
    weights = radial_weights(grid, n_angles, centre, filter_name)
    # Samples of the lower half plane (sin < 0) are gridded as their mirror images,
    # conjugated (the slice is real).
    mirrored = np.ascontiguousarray(np.sin(angles) < 0)
    cosines = np.ascontiguousarray(np.where(mirrored, -np.cos(angles), np.cos(angles)))
    sines = np.ascontiguousarray(np.abs(np.sin(angles)))
    source_rows, row_phase, row_scale, column_scale = _crop_factors(
        size, grid, width, beta, row_offset
    )
    half = size // 2
    out = np.empty((n_slices, size, size), dtype=np.float32)
    plane = np.empty((n_rows, grid), dtype=np.complex64)
    for index in range(n_slices):
        spectra = fft.rfft(
            np.asarray(sinograms[index], dtype=np.float32), n=grid, axis=1, workers=n_threads
        )
        grid_kernel(
            spectra.view(np.float32),
            weights.view(np.float32),
            cosines,
            sines,
            mirrored.view(np.uint8),
            table,
            float(TABLE_DENSITY),
            width,
            plane.view(np.float32),
            row_offset,
            ROWS_PER_BAND,
            n_threads,
        )
        rows = fft.ifft(plane, axis=1, norm="forward", workers=n_threads, overwrite_x=True)
        image = fft.ifft(
            np.concatenate((rows[:, grid - half :], rows[:, : size - half]), axis=1),
            n=grid, axis=0, norm="forward",
            workers=n_threads, overwrite_x=True,
        )  # fmt: skip
        crop_kernel(
            image.view(np.float32),
            source_rows,
            row_phase,
            row_scale,
            column_scale,
            out[index],
            bool(circle),
            n_threads,
        )
    return out
