"""In-place 2-D FFTs of one complex64 buffer: the only FFTs an ePIE iteration does.

ePIE visits positions one after another (each position's exit wave depends on the
previous position's update), so its FFTs are two per position on one pattern-sized
buffer. FFTW through pyFFTW, planned once per buffer (FFTW_MEASURE, in place, complex64),
is the fastest library measured here for this (docs/ptychography.md); `scipy.fft`
(pocketfft) is the fallback when pyFFTW is not importable. Both transforms are
unnormalised: the kernels fold the orthonormal scale into the modulus constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft

try:
    import pyfftw
except ImportError:  # pragma: no cover - pyFFTW is a dependency; kept optional for builds without
    pyfftw = None

LIBRARIES = ("fftw", "scipy")


@dataclass
class InPlaceFFT2:
    """A complex64 `buffer` and its unnormalised `forward()`/`backward()` FFTs in place."""

    buffer: np.ndarray
    forward: Callable[[], object]
    backward: Callable[[], object]
    library: str


def plan_fft2(
    shape: tuple[int, int], n_threads: int = 1, library: str | None = None
) -> InPlaceFFT2:
    """An in-place FFT pair on a new complex64 buffer of `shape`, on `n_threads` threads.

    `library`: "fftw" (pyFFTW) or "scipy"; None takes FFTW when pyFFTW imports.
    """
    if library is None:
        library = "fftw" if pyfftw is not None else "scipy"
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    if library == "fftw":
        if pyfftw is None:
            raise ValueError("library 'fftw' needs pyFFTW, which is not importable here")
        buffer = pyfftw.empty_aligned(shape, dtype=np.complex64)
        flags = ("FFTW_MEASURE", "FFTW_DESTROY_INPUT")
        forward = pyfftw.FFTW(buffer, buffer, axes=(0, 1), flags=flags, threads=n_threads)
        backward = pyfftw.FFTW(
            buffer, buffer, axes=(0, 1), direction="FFTW_BACKWARD", flags=flags, threads=n_threads
        )
        buffer.fill(0)  # planning with FFTW_MEASURE overwrites the buffer
        return InPlaceFFT2(buffer, forward.execute, backward.execute, "fftw")
    buffer = np.zeros(shape, dtype=np.complex64)

    def scipy_forward() -> None:
        buffer[...] = scipy.fft.fft2(buffer, norm="backward", workers=n_threads, overwrite_x=True)

    def scipy_backward() -> None:
        buffer[...] = scipy.fft.ifft2(buffer, norm="forward", workers=n_threads, overwrite_x=True)

    return InPlaceFFT2(buffer, scipy_forward, scipy_backward, "scipy")
