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


def reference_modes_modulus(
    wave_ft: np.ndarray, amplitude: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, float]:
    """Mixed-state modulus constraint on (modes, ny, nx) far fields: every mode scaled by
    √I / √(Σ_m |Ψ_m|²) on valid pixels (no phase anywhere: mode 0 = √I, the rest 0)."""
    modulus = np.sqrt(np.sum(np.abs(wave_ft) ** 2, axis=0))
    error = float(np.sum(((modulus - amplitude) ** 2)[valid]))
    has_phase = modulus > 1e-30
    revised = wave_ft * np.where(has_phase, amplitude / np.where(has_phase, modulus, 1), 0)
    revised[0] = np.where(has_phase, revised[0], amplitude)
    return np.where(valid, revised, wave_ft).astype(wave_ft.dtype), error


def bilinear_weights(y: float, x: float) -> tuple[int, int, list[tuple[int, int, np.float32]]]:
    """Integer corner and the (row offset, column offset, weight) of each neighbour, the
    weights in float32 as the kernel forms them."""
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    fy, fx = np.float32(y - y0), np.float32(x - x0)
    one = np.float32(1)
    weights = [(0, 0, (one - fy) * (one - fx)), (0, 1, (one - fy) * fx)]
    weights += [(1, 0, fy * (one - fx)), (1, 1, fy * fx)]
    return y0, x0, [(dy, dx, w) for dy, dx, w in weights if w != 0]


def reference_patch(obj: np.ndarray, y: float, x: float, shape: tuple[int, ...]) -> np.ndarray:
    """The object under a patch at (y, x): bilinear between pixels when fractional."""
    ny, nx = shape
    y0, x0, weights = bilinear_weights(y, x)
    patch = np.zeros(shape, dtype=obj.dtype)
    for dy, dx, w in weights:
        patch += w * obj[y0 + dy : y0 + dy + ny, x0 + dx : x0 + dx + nx]
    return patch


def reference_spread(obj: np.ndarray, y: float, x: float, step: np.ndarray) -> None:
    """obj += the adjoint of `reference_patch` applied to `step`."""
    ny, nx = step.shape
    y0, x0, weights = bilinear_weights(y, x)
    for dy, dx, w in weights:
        obj[y0 + dy : y0 + dy + ny, x0 + dx : x0 + dx + nx] += w * step


def reference_modes_update(
    obj: np.ndarray,
    probes: np.ndarray,
    y0: float,
    x0: float,
    exit_waves: np.ndarray,
    revised: np.ndarray,
    alpha: float,
    beta: float,
    regularised: bool,
    update_probe: bool = True,
) -> None:
    """O += w_O Σ_m P_m*Δ_m with w_O from Σ_m |P_m|²; P_m += w_P O*Δ_m (ePIE or rPIE).
    At a fractional (y0, x0) the patch is interpolated and the object step spread back."""
    patch = reference_patch(obj, y0, x0, probes.shape[1:])
    delta = revised - exit_waves
    power = np.sum(np.abs(probes) ** 2, axis=0)
    obj_max = np.max(np.abs(patch) ** 2)
    if regularised:
        w_obj = 1.0 / ((1 - alpha) * power + alpha * power.max())
        w_probe = 1.0 / ((1 - beta) * np.abs(patch) ** 2 + beta * obj_max)
    else:
        w_obj = alpha / power.max()
        w_probe = beta / obj_max
    reference_spread(obj, y0, x0, w_obj * np.sum(np.conj(probes) * delta, axis=0))
    if update_probe:
        probes += w_probe * np.conj(patch) * delta


def reference_modes_iteration(
    obj: np.ndarray,
    probes: np.ndarray,
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
    """One mixed-state ePIE/rPIE pass (probes (modes, ny, nx)) in place; Σ error / Σ I.
    `positions` may be fractional (bilinear patches)."""
    error = 0.0
    for index in order:
        y0, x0 = positions[index]
        waves = probes * reference_patch(obj, y0, x0, probes.shape[1:])
        waves_ft = np.fft.fft2(waves, norm="ortho")
        revised_ft, position_error = reference_modes_modulus(waves_ft, amplitudes[index], valid)
        error += position_error
        revised = np.fft.ifft2(revised_ft, norm="ortho").astype(np.complex64)
        reference_modes_update(
            obj, probes, y0, x0, waves, revised, alpha, beta, regularised, update_probe
        )
    return error / float(np.sum((amplitudes**2)[:, valid]))
