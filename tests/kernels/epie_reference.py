"""Plain numpy ePIE / rPIE: the obviously-right reference the Cython kernels must match.

Also the "plain numpy implementation of the same update" the benchmark times.
"""

from __future__ import annotations

import numpy as np


def reference_exit_wave(obj: np.ndarray, probe: np.ndarray, y0: int, x0: int) -> np.ndarray:
    ny, nx = probe.shape
    return probe * obj[y0 : y0 + ny, x0 : x0 + nx]


def reference_modulus(
    wave_ft: np.ndarray, amplitude: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, float]:
    modulus = np.abs(wave_ft)
    error = float(np.sum(((modulus - amplitude) ** 2)[valid]))
    phase = np.where(modulus > 1e-30, wave_ft / np.where(modulus > 0, modulus, 1), 1.0)
    return np.where(valid, amplitude * phase, wave_ft).astype(wave_ft.dtype), error


def reference_update(
    obj: np.ndarray,
    probe: np.ndarray,
    y0: int,
    x0: int,
    exit_wave: np.ndarray,
    revised: np.ndarray,
    alpha: float,
    beta: float,
    regularised: bool,
    update_probe: bool = True,
) -> None:
    ny, nx = probe.shape
    patch = obj[y0 : y0 + ny, x0 : x0 + nx].copy()
    delta = revised - exit_wave
    probe_max = np.max(np.abs(probe) ** 2)
    obj_max = np.max(np.abs(patch) ** 2)
    if regularised:
        w_obj = 1.0 / ((1 - alpha) * np.abs(probe) ** 2 + alpha * probe_max)
        w_probe = 1.0 / ((1 - beta) * np.abs(patch) ** 2 + beta * obj_max)
    else:
        w_obj = alpha / probe_max
        w_probe = beta / obj_max
    obj[y0 : y0 + ny, x0 : x0 + nx] = patch + w_obj * np.conj(probe) * delta
    if update_probe:
        probe += w_probe * np.conj(patch) * delta


def reference_iteration(
    obj: np.ndarray,
    probe: np.ndarray,
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    order: np.ndarray,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    regularised: bool = False,
    update_probe: bool = True,
) -> float:
    """One ePIE/rPIE pass in numpy (in place); returns Σ error / Σ valid I."""
    error = 0.0
    for index in order:
        y0, x0 = positions[index]
        wave = reference_exit_wave(obj, probe, y0, x0)
        wave_ft = np.fft.fft2(wave, norm="ortho")
        revised_ft, position_error = reference_modulus(wave_ft, amplitudes[index], valid)
        error += position_error
        revised = np.fft.ifft2(revised_ft, norm="ortho").astype(np.complex64)
        reference_update(obj, probe, y0, x0, wave, revised, alpha, beta, regularised, update_probe)
    return error / float(np.sum((amplitudes**2)[:, valid]))
