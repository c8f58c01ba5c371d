"""Gain correction, shifted frame summation and dose weighting of cryo-EM movies.

The typed face of the `_motioncor` Cython kernel: checks shapes and dtypes (with
`prefect_beamline.ext.arguments`) before each call. Binning and the shifted sum also
come for a group of frames (`gain_bin_frames`, `shift_accumulate_frames`): one pass of
the gain and the output per group instead of per frame. Frames are passed as stored (uint8,
int8, int16, uint16 or float32) with an optional float32 gain reference (multiplied
in); the kernels release the GIL and split rows over `n_threads` (None or 0: every
core).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefect_beamline.ext._motioncor import (
    cross_spectra_kernel,
    dose_accumulate_kernel,
    dose_normalise_kernel,
    gain_bin_kernel,
    half_inverse_critical_exposure_kernel,
    shift_accumulate_kernel,
)
from prefect_beamline.ext.arguments import (
    REAL_KINDS,
    kernel_input,
    kernel_threads,
    output_buffer,
    require_array,
    require_buffer,
    require_integer,
    require_number,
    require_same_shape,
    require_shape,
)

DEFAULT_TILE = 32

SUPPORTED_DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.float32)
_NO_GAIN = np.ones((1, 1), dtype=np.float32)


def _frame(raw: np.ndarray, gain: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    require_array("raw", raw, ndim=2, axes="(ny, nx)", dtypes=SUPPORTED_DTYPES)
    raw = np.ascontiguousarray(raw)
    if gain is None:
        return raw, _NO_GAIN
    return raw, kernel_input("gain", gain, np.float32, raw.shape, source="raw")


def _frame_group(
    frames: Sequence[np.ndarray], gain: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The frames as C-contiguous arrays of one shape and dtype, their addresses (what the
    kernels read; the list keeps them alive) and the gain as the kernels take it."""
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame, got none")
    first, gain_array = _frame(frames[0], gain)
    group = [first]
    for index, frame in enumerate(frames[1:], start=1):
        name = f"frames[{index}]"
        require_array(name, frame, ndim=2, axes="(ny, nx)", dtypes=(first.dtype,))
        require_shape(name, frame, first.shape, source="frames[0]")
        group.append(np.ascontiguousarray(frame))
    addresses = np.array([frame.ctypes.data for frame in group], dtype=np.uintp)
    return group, addresses, gain_array


def _spectrum_buffer(name: str, array: np.ndarray, dtype: type) -> np.ndarray:
    """A 2-D array on the rfft2 grid, passed to the kernel as is: exact dtype, C order."""
    return require_buffer(name, array, dtype, ndim=2, axes="(ny, nx//2 + 1)")


def gain_bin(
    raw: np.ndarray, gain: np.ndarray | None, factor: int, n_threads: int | None = 0
) -> np.ndarray:
    """Gain-corrected frame binned by `factor` (block mean), float32.

    Edge rows/columns that do not fill a block are dropped.
    """
    return gain_bin_frames([raw], gain, factor, n_threads=n_threads)[0]


def gain_bin_frames(
    frames: Sequence[np.ndarray],
    gain: np.ndarray | None,
    factor: int,
    out: np.ndarray | None = None,
    n_threads: int | None = 0,
) -> np.ndarray:
    """Each frame gain-corrected and binned by `factor` (block mean), float32, into
    `out` (len(frames), ny // factor, nx // factor) or a new array.

    One call per group of frames: the gain reference is read once per group, the frames
    once. Edge rows/columns that do not fill a block are dropped.
    """
    factor = require_integer("factor", factor, minimum=1)
    group, addresses, gain_array = _frame_group(frames, gain)
    ny, nx = group[0].shape
    shape = (len(group), ny // factor, nx // factor)
    out = output_buffer("out", out, shape, np.float32, source="the binned frames'")
    gain_bin_kernel(
        group[0], addresses, gain_array, gain is not None, factor, out, kernel_threads(n_threads)
    )
    return out


def shift_accumulate(
    raw: np.ndarray,
    gain: np.ndarray | None,
    coeff_x: np.ndarray,
    coeff_y: np.ndarray,
    out: np.ndarray,
    n_threads: int | None = 0,
    tile: int = DEFAULT_TILE,
) -> None:
    """out += the gain-corrected frame sampled at (x + dx, y + dy), bilinear.

    dx, dy (pixels) are the quadratic fields with 6 coefficients each (see
    `prefect_beamline.techniques.em.motion.field_basis`), evaluated at the centre of each
    `tile` x `tile` block; `out` is float32 like the frame.
    """
    require_buffer("out", out, np.float32)
    if isinstance(raw, np.ndarray):
        require_same_shape(raw=raw, out=out)
    cx = np.asarray(coeff_x, dtype=np.float64)
    cy = np.asarray(coeff_y, dtype=np.float64)
    if cx.shape != (6,) or cy.shape != (6,):
        raise ValueError(
            f"coeff_x and coeff_y must each hold 6 coefficients, got shapes {cx.shape} and "
            f"{cy.shape}"
        )
    if not (np.all(np.isfinite(cx)) and np.all(np.isfinite(cy))):
        raise ValueError(f"coeff_x and coeff_y must be finite, got {cx} and {cy}")
    shift_accumulate_frames([raw], gain, np.stack([cx, cy])[None], out, n_threads, tile)


def shift_accumulate_frames(
    frames: Sequence[np.ndarray],
    gain: np.ndarray | None,
    coefficients: np.ndarray,
    out: np.ndarray,
    n_threads: int | None = 0,
    tile: int = DEFAULT_TILE,
) -> None:
    """out += Σ_f frame f gain-corrected and sampled at (x + dx_f, y + dy_f), bilinear.

    `coefficients` (len(frames), 2, 6): frame f's dx and dy fields as `shift_accumulate`
    takes them. One call per group of frames: each tile of `out` gets every frame of
    the group before the next tile, so `out` and the gain are read once per group and
    each frame once (the sum equals `shift_accumulate` frame by frame, bit for bit).
    """
    tile = require_integer("tile", tile, minimum=1)
    group, addresses, gain_array = _frame_group(frames, gain)
    require_buffer("out", out, np.float32)
    require_shape("out", out, group[0].shape, source="frames[0]")
    coefficients = np.ascontiguousarray(coefficients, dtype=np.float64)
    require_shape("coefficients", coefficients, (len(group), 2, 6), source="(frames, dx/dy, terms)")
    if not np.all(np.isfinite(coefficients)):
        raise ValueError(f"coefficients must be finite, got {coefficients}")
    shift_accumulate_kernel(
        group[0],
        addresses,
        gain_array,
        gain is not None,
        coefficients,
        out,
        tile,
        kernel_threads(n_threads),
    )


def voltage_scale(voltage_kv: float) -> float:
    """Critical-exposure scale of Grant & Grigorieff: 1 at 300 kV, 0.8 at 200 kV."""
    voltage_kv = require_number("voltage_kv", voltage_kv, above=0.0)
    if voltage_kv >= 300:
        return 1.0
    if voltage_kv >= 200:
        return 0.8 + 0.2 * (voltage_kv - 200) / 100
    return 0.8 * voltage_kv / 200


def half_inverse_critical_exposure(
    shape: tuple[int, int], pixel_size: float, voltage_kv: float, n_threads: int | None = 0
) -> np.ndarray:
    """1 / (2 Ne(k)) (Å²/e) on the rfft2 grid of an image of `shape` (ny, nx) with pixels of
    `pixel_size` Å: computed once per movie, so each dose group costs one exp per
    frequency."""
    if len(shape) != 2:
        raise ValueError(f"shape must be an image's (ny, nx), got {shape}")
    ny = require_integer("shape[0] (ny)", shape[0], minimum=1)
    nx = require_integer("shape[1] (nx)", shape[1], minimum=2)
    pixel_size = require_number("pixel_size", pixel_size, above=0.0)
    scale = voltage_scale(voltage_kv)
    out = np.empty((ny, nx // 2 + 1), dtype=np.float32)
    half_inverse_critical_exposure_kernel(out, nx, pixel_size, scale, kernel_threads(n_threads))
    return out


def dose_accumulate(
    group_spectrum: np.ndarray,
    acc: np.ndarray,
    weight_sq: np.ndarray,
    half_inverse_ne: np.ndarray,
    *,
    dose: float,
    n_frames: int,
    n_threads: int | None = 0,
) -> None:
    """Add a frame group's spectrum, weighted for its mean exposure `dose` (e/Å²).

    `group_spectrum` and `acc` are complex64 rfft2 arrays (ny, nx//2 + 1), `weight_sq`
    and `half_inverse_ne` (from `half_inverse_critical_exposure`) float32 of that shape;
    `acc` and `weight_sq` are updated in place.
    """
    require_array(
        "group_spectrum", group_spectrum, ndim=2, axes="(ny, nx//2 + 1)", dtypes=(np.complex64,)
    )
    _spectrum_buffer("acc", acc, np.complex64)
    _spectrum_buffer("weight_sq", weight_sq, np.float32)
    _spectrum_buffer("half_inverse_ne", half_inverse_ne, np.float32)
    require_same_shape(
        group_spectrum=group_spectrum,
        acc=acc,
        weight_sq=weight_sq,
        half_inverse_ne=half_inverse_ne,
    )
    dose = require_number("dose", dose, at_least=0.0)
    n_frames = require_integer("n_frames", n_frames, minimum=1)
    dose_accumulate_kernel(
        np.ascontiguousarray(group_spectrum),
        acc,
        weight_sq,
        half_inverse_ne,
        dose,
        n_frames,
        kernel_threads(n_threads),
    )


def dose_normalise(
    acc: np.ndarray, weight_sq: np.ndarray, n_frames: int, n_threads: int | None = 0
) -> None:
    """Scale the weighted sum so that k = 0 keeps the plain sum's value, in place.

    `acc` (complex64) and `weight_sq` (float32) are what `dose_accumulate` filled;
    `n_frames` is the number of frames summed over all groups.
    """
    _spectrum_buffer("acc", acc, np.complex64)
    _spectrum_buffer("weight_sq", weight_sq, np.float32)
    require_same_shape(acc=acc, weight_sq=weight_sq)
    n_frames = require_integer("n_frames", n_frames, minimum=1)
    dose_normalise_kernel(acc, weight_sq, n_frames, kernel_threads(n_threads))


def cross_spectra(
    spectra: np.ndarray,
    weight: np.ndarray,
    phase_x: np.ndarray,
    phase_y: np.ndarray,
    out: np.ndarray | None = None,
    n_threads: int | None = 0,
) -> np.ndarray:
    """weight · S_i · conj(T - A_i) for every frame i: its cross-spectrum with the sum of
    all the other frames, each moved back by its shift.

    spectra (n, ny, nxh) complex64 rfft2 of the frames; weight (ny, nxh) float32 filter;
    phase_x (n, nxh) and phase_y (n, ny) complex64: exp(2πi k·s) per axis and frame;
    `out`, if given, a C-contiguous complex64 buffer of the spectra's shape.
    """
    require_buffer("spectra", spectra, np.complex64, ndim=3, axes="(n, ny, nx//2 + 1)")
    n, ny, nxh = spectra.shape
    weight = kernel_input("weight", weight, np.float32, (ny, nxh), source="the spectra's (ny, nxh)")
    phases = REAL_KINDS + "c"
    phase_x = kernel_input(
        "phase_x", phase_x, np.complex64, (n, nxh), source="the spectra's (n, nxh)", kinds=phases
    )
    phase_y = kernel_input(
        "phase_y", phase_y, np.complex64, (n, ny), source="the spectra's (n, ny)", kinds=phases
    )
    out = output_buffer("out", out, spectra.shape, np.complex64, source="spectra")
    cross_spectra_kernel(spectra, weight, phase_x, phase_y, out, kernel_threads(n_threads))
    return out
