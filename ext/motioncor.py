"""Gain correction, shifted frame summation and dose weighting of cryo-EM movies.

The typed face of the `_motioncor` Cython kernel. Frames are passed as stored (uint8,
int8, int16, uint16 or float32) with an optional float32 gain reference (multiplied
in); the kernels release the GIL and split rows over `n_threads`.
"""

from __future__ import annotations

import numpy as np
from prefect_beamline.ext._motioncor import (
    cross_spectra_kernel,
    dose_accumulate_kernel,
    dose_normalise_kernel,
    gain_bin_kernel,
    half_inverse_critical_exposure_kernel,
    shift_accumulate_kernel,
)

DEFAULT_TILE = 32

SUPPORTED_DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.float32)
_NO_GAIN = np.ones((1, 1), dtype=np.float32)


def _frame(raw: np.ndarray, gain: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if raw.ndim != 2:
        raise ValueError(f"frame must be 2-D (ny, nx), got shape {raw.shape}")
    if raw.dtype.type not in SUPPORTED_DTYPES:
        names = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
        raise ValueError(f"frame dtype must be one of {names}, got {raw.dtype}")
    raw = np.ascontiguousarray(raw)
    if gain is None:
        return raw, _NO_GAIN
    if gain.shape != raw.shape:
        raise ValueError(f"gain shape {gain.shape} differs from frame shape {raw.shape}")
    return raw, np.ascontiguousarray(gain, dtype=np.float32)


def gain_bin(
    raw: np.ndarray, gain: np.ndarray | None, factor: int, n_threads: int = 0
) -> np.ndarray:
    """Gain-corrected frame binned by `factor` (block mean), float32.

    Edge rows/columns that do not fill a block are dropped.
    """
    if factor < 1:
        raise ValueError(f"binning factor must be at least 1, got {factor}")
    raw, gain_array = _frame(raw, gain)
    out = np.empty((raw.shape[0] // factor, raw.shape[1] // factor), dtype=np.float32)
    gain_bin_kernel(raw, gain_array, gain is not None, factor, out, _threads(n_threads))
    return out


def shift_accumulate(
    raw: np.ndarray,
    gain: np.ndarray | None,
    coeff_x: np.ndarray,
    coeff_y: np.ndarray,
    out: np.ndarray,
    n_threads: int = 0,
    tile: int = DEFAULT_TILE,
) -> None:
    """out += the gain-corrected frame sampled at (x + dx, y + dy), bilinear.

    dx, dy (pixels) are the quadratic fields with 6 coefficients each (see
    `prefect_beamline.analysis.motion.field_basis`), evaluated at the centre of each
    `tile` x `tile` block; `out` is float32 like the frame.
    """
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")
    raw, gain_array = _frame(raw, gain)
    if out.shape != raw.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {raw.shape}")
    cx = np.ascontiguousarray(coeff_x, dtype=np.float64)
    cy = np.ascontiguousarray(coeff_y, dtype=np.float64)
    if cx.shape != (6,) or cy.shape != (6,):
        raise ValueError("coeff_x and coeff_y must each hold 6 coefficients")
    shift_accumulate_kernel(
        raw, gain_array, gain is not None, cx, cy, out, tile, _threads(n_threads)
    )


def voltage_scale(voltage_kv: float) -> float:
    """Critical-exposure scale of Grant & Grigorieff: 1 at 300 kV, 0.8 at 200 kV."""
    if voltage_kv >= 300:
        return 1.0
    if voltage_kv >= 200:
        return 0.8 + 0.2 * (voltage_kv - 200) / 100
    return 0.8 * voltage_kv / 200


def half_inverse_critical_exposure(
    shape: tuple[int, int], pixel_size: float, voltage_kv: float, n_threads: int = 0
) -> np.ndarray:
    """1 / (2 Ne(k)) (Å²/e) on the rfft2 grid of an image of `shape`: computed once per
    movie, so each dose group costs one exp per frequency."""
    out = np.empty((shape[0], shape[1] // 2 + 1), dtype=np.float32)
    half_inverse_critical_exposure_kernel(
        out, float(pixel_size), voltage_scale(voltage_kv), _threads(n_threads)
    )
    return out


def dose_accumulate(
    group_spectrum: np.ndarray,
    acc: np.ndarray,
    weight_sq: np.ndarray,
    half_inverse_ne: np.ndarray,
    *,
    dose: float,
    n_frames: int,
    n_threads: int = 0,
) -> None:
    """Add a frame group's spectrum, weighted for its mean exposure `dose` (e/Å²)."""
    if group_spectrum.dtype != np.complex64 or acc.dtype != np.complex64:
        raise ValueError("group_spectrum and acc must be complex64 rfft2 arrays")
    shapes = {group_spectrum.shape, acc.shape, weight_sq.shape, half_inverse_ne.shape}
    if len(shapes) != 1:
        raise ValueError(f"group, acc, weight_sq and half_inverse_ne differ in shape: {shapes}")
    dose_accumulate_kernel(
        np.ascontiguousarray(group_spectrum),
        acc,
        weight_sq,
        half_inverse_ne,
        float(dose),
        int(n_frames),
        _threads(n_threads),
    )


def dose_normalise(
    acc: np.ndarray, weight_sq: np.ndarray, n_frames: int, n_threads: int = 0
) -> None:
    """Scale the weighted sum so that k = 0 keeps the plain sum's value, in place."""
    dose_normalise_kernel(acc, weight_sq, int(n_frames), _threads(n_threads))


def cross_spectra(
    spectra: np.ndarray,
    weight: np.ndarray,
    phase_x: np.ndarray,
    phase_y: np.ndarray,
    out: np.ndarray | None = None,
    n_threads: int = 0,
) -> np.ndarray:
    """weight · S_i · conj(T - A_i) for every frame i: its cross-spectrum with the sum of
    all the other frames, each moved back by its shift.

    spectra (n, ny, nxh) complex64 rfft2 of the frames; weight (ny, nxh) float32 filter;
    phase_x (n, nxh) and phase_y (n, ny) complex64: exp(2πi k·s) per axis and frame.
    """
    n, ny, nxh = spectra.shape
    if spectra.dtype != np.complex64 or not spectra.flags.c_contiguous:
        raise ValueError("spectra must be C-contiguous complex64 (n, ny, nx//2 + 1)")
    if weight.shape != (ny, nxh) or phase_x.shape != (n, nxh) or phase_y.shape != (n, ny):
        raise ValueError(
            f"shapes: spectra {spectra.shape}, weight {weight.shape}, phase_x "
            f"{phase_x.shape}, phase_y {phase_y.shape} do not agree"
        )
    if out is None:
        out = np.empty_like(spectra)
    cross_spectra_kernel(
        spectra,
        np.ascontiguousarray(weight, dtype=np.float32),
        np.ascontiguousarray(phase_x, dtype=np.complex64),
        np.ascontiguousarray(phase_y, dtype=np.complex64),
        out,
        _threads(n_threads),
    )
    return out


def _threads(n_threads: int) -> int:
    import os

    return n_threads if n_threads > 0 else (os.cpu_count() or 1)
