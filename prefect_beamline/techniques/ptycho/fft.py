"""In-place 2-D FFTs of one complex64 buffer: the only FFTs an ePIE iteration does.

ePIE visits positions one after another (each position's exit wave depends on the
previous position's update), so its FFTs are two per position on one pattern-sized
buffer. FFTW through pyFFTW, planned once per buffer (FFTW_MEASURE, in place, complex64),
is the fastest library measured here for this (docs/ptychography.md); `scipy.fft`
(pocketfft) is the fallback when pyFFTW is not importable. Both transforms are
unnormalised: the kernels fold the orthonormal scale into the modulus constraint.

`plan_block_fft` takes the 2-D FFT apart for the fused ePIE pass (`ext/_epie_blocks.h`):
FFTW plans of batched 1-D row and column transforms on blocks that stay in cache, run
from C through FFTW's own `fftwf_execute_dft` (the library pyFFTW loaded, reached with
ctypes), so the per-pixel steps run on each block between its FFTs and Python is not
entered between positions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


# FFTW's planner flags and directions (fftw3.h).
FFTW_MEASURE = 0
FFTW_UNALIGNED = 1 << 1
FFTW_FORWARD, FFTW_BACKWARD = -1, 1
# Bytes every block of the fused pass starts on when the plans are aligned (AVX-512).
ALIGNMENT = 64
# Rows per row block (8 rows of 256 complex64: 16 kB, in L1) and columns per column
# block: 256, whole rows up to 256² patterns, so the modulus pass reads each position's
# amplitudes (from memory, 256 kB) front to back as the hardware prefetcher follows;
# 64-column blocks measured no faster (A/B at load 2: 1.29x vs 1.26x the 2-D floor).
BLOCK_ROWS, BLOCK_COLS = 8, 256
# complex64 added to each wave row: a stride of a power of two puts a column's pixels
# in few cache sets.
ROW_PAD = 8
_PLANNER_LOCK = threading.Lock()  # FFTW's planner is not thread-safe; execution is


@dataclass(frozen=True)
class BlockFFT:
    """The FFTW plans of the fused ePIE pass for one pattern shape, and its wave buffer.

    `plans`: addresses of the row forward, row backward, last row block forward and
    backward, then the same four for columns (0 where the size divides evenly);
    `execute`: the address of `fftwf_execute_dft`. `buffer` (modes, ny, nx + pad)
    complex64, `ALIGNMENT`-aligned when `aligned` (the plans then need every block
    aligned).
    """

    buffer: np.ndarray
    execute: int
    plans: np.ndarray  # uint64 (8,)
    rows: int
    cols: int
    aligned: bool
    library: str = "fftw-blocks"


def _fftw_library() -> ctypes.CDLL | None:
    """FFTW's single-precision C library as pyFFTW loaded it (the wheel's bundled copy,
    or the system's), or None."""
    if pyfftw is None:
        return None
    package = Path(pyfftw.__file__).resolve().parent
    bundled = sorted(
        path
        for path in package.parent.glob("pyfftw.libs/libfftw3f-*.so*")
        if "_omp" not in path.name and "_threads" not in path.name
    )
    name = str(bundled[0]) if bundled else ctypes.util.find_library("fftw3f")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        library.fftwf_execute_dft  # noqa: B018 - raises AttributeError when absent
    except (OSError, AttributeError):
        return None
    library.fftwf_plan_many_dft.restype = ctypes.c_void_p
    library.fftwf_plan_many_dft.argtypes = [
        ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_uint,
    ]  # fmt: skip
    return library


def _single_threaded_planner() -> Callable[[], object]:
    """Sets FFTW's planner to one thread (pyFFTW leaves it at its last plan's count)."""
    if pyfftw is None:
        return lambda: None
    package = Path(pyfftw.__file__).resolve().parent
    for path in sorted(package.parent.glob("pyfftw.libs/libfftw3f_*.so*")):
        try:
            setter = ctypes.CDLL(str(path)).fftwf_plan_with_nthreads
        except (OSError, AttributeError):
            continue
        return lambda: setter(ctypes.c_int(1))
    return lambda: None


_LIBRARY = _fftw_library()
_ONE_THREAD = _single_threaded_planner()


def block_fft_available() -> bool:
    """Whether the fused pass can reach FFTW's C library here."""
    return _LIBRARY is not None


@functools.cache
def _block_plans(
    shape: tuple[int, int], stride: int, rows: int, cols: int, aligned: bool
) -> tuple[int, tuple[int, ...]]:
    """(execute address, 8 plan addresses) for `shape`, planned once per process (FFTW
    keeps them, and its wisdom, until exit)."""
    assert _LIBRARY is not None
    ny, nx = shape
    flags = FFTW_MEASURE | (0 if aligned else FFTW_UNALIGNED)
    scratch = pyfftw.empty_aligned((ny, stride), dtype=np.complex64, n=ALIGNMENT)
    address = scratch.ctypes.data

    def plan(length: int, howmany: int, stride: int, dist: int, sign: int) -> int:
        if howmany == 0:
            return 0
        n = (ctypes.c_int * 1)(length)
        made = _LIBRARY.fftwf_plan_many_dft(
            1, n, howmany, address, None, stride, dist, address, None, stride, dist, sign, flags
        )
        if not made:
            raise RuntimeError(f"FFTW could not plan {howmany} FFTs of {length}")
        return int(made)

    with _PLANNER_LOCK:
        _ONE_THREAD()
        plans = (
            plan(nx, rows, 1, stride, FFTW_FORWARD),
            plan(nx, rows, 1, stride, FFTW_BACKWARD),
            plan(nx, ny % rows, 1, stride, FFTW_FORWARD),
            plan(nx, ny % rows, 1, stride, FFTW_BACKWARD),
            plan(ny, cols, stride, 1, FFTW_FORWARD),
            plan(ny, cols, stride, 1, FFTW_BACKWARD),
            plan(ny, nx % cols, stride, 1, FFTW_FORWARD),
            plan(ny, nx % cols, stride, 1, FFTW_BACKWARD),
        )
    execute = ctypes.cast(_LIBRARY.fftwf_execute_dft, ctypes.c_void_p).value
    assert execute is not None
    return execute, plans


def plan_block_fft(
    shape: tuple[int, int],
    modes: int = 1,
    rows: int = BLOCK_ROWS,
    cols: int = BLOCK_COLS,
    pad: int = ROW_PAD,
) -> BlockFFT:
    """The fused pass's plans for patterns of `shape` and a buffer for `modes` waves,
    each row padded by `pad` complex64.

    Raises ValueError when FFTW's C library is not reachable (`block_fft_available`).
    Plans are single-threaded: the kernel runs blocks on threads itself.
    """
    if _LIBRARY is None:
        raise ValueError("the fused ePIE pass needs FFTW's C library (pyFFTW), not found here")
    ny, nx = shape
    rows, cols = min(rows, ny), min(cols, nx)
    itemsize = np.dtype(np.complex64).itemsize
    stride = nx + pad
    aligned = (stride * itemsize) % ALIGNMENT == 0 and (cols * itemsize) % ALIGNMENT == 0
    execute, plans = _block_plans((ny, nx), stride, rows, cols, aligned)
    buffer = pyfftw.empty_aligned((modes, ny, stride), dtype=np.complex64, n=ALIGNMENT)
    buffer.fill(0)
    return BlockFFT(buffer, execute, np.array(plans, dtype=np.uint64), rows, cols, aligned)
