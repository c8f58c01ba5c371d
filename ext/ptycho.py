"""Per-position ePIE/rPIE kernels on complex64 arrays: the public face of `_epie`.

Each function checks shapes, dtypes and bounds, then calls a Cython kernel that
releases the GIL and splits rows over `n_threads` OpenMP threads. Object, probe and
waves are C-contiguous complex64; measured amplitudes float32 in FFT order (the zero
frequency at [0, 0], as `scipy.fft.fft2` returns it); `valid` is a bool mask.
"""

from __future__ import annotations

import numpy as np
from prefect_beamline.ext._epie import (
    add_intensity_kernel,
    exit_wave_kernel,
    extract_patch_kernel,
    modulus_constraint_kernel,
    update_kernel,
)


def _complex_view(array: np.ndarray, name: str) -> np.ndarray:
    """A float32 (ny, 2·nx) view of a C-contiguous complex64 array (no copy)."""
    if array.dtype != np.complex64:
        raise ValueError(f"{name} must be complex64, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return array.view(np.float32)


def _check_patch(obj: np.ndarray, shape: tuple[int, ...], y0: int, x0: int) -> None:
    ny, nx = shape
    if y0 < 0 or x0 < 0 or y0 + ny > obj.shape[0] or x0 + nx > obj.shape[1]:
        raise ValueError(
            f"patch {ny}x{nx} at (y0={y0}, x0={x0}) falls outside the object {obj.shape}"
        )


def exit_wave(
    obj: np.ndarray, probe: np.ndarray, y0: int, x0: int, out: np.ndarray, *, n_threads: int = 1
) -> tuple[float, float]:
    """out = probe · obj[y0:y0+n, x0:x0+m]: the wave leaving the sample at one position.

    Returns (max |P|², max |O[patch]|²), read in the same pass, for `update_object_probe`.
    """
    o, p, w = (_complex_view(a, n) for a, n in ((obj, "obj"), (probe, "probe"), (out, "out")))
    if out.shape != probe.shape:
        raise ValueError(f"out shape {out.shape} differs from probe shape {probe.shape}")
    _check_patch(obj, probe.shape, y0, x0)
    probe_max, object_max = exit_wave_kernel(o, p, y0, x0, w, n_threads)
    return float(probe_max), float(object_max)


def extract_patch(
    obj: np.ndarray, y0: int, x0: int, out: np.ndarray, *, n_threads: int = 1
) -> np.ndarray:
    """out = obj[y0:y0+n, x0:x0+m] into a preallocated buffer."""
    o, w = _complex_view(obj, "obj"), _complex_view(out, "out")
    _check_patch(obj, out.shape, y0, x0)
    extract_patch_kernel(o, y0, x0, w, n_threads)
    return out


def add_intensity(
    total: np.ndarray, probe: np.ndarray, y0: int, x0: int, *, n_threads: int = 1
) -> None:
    """total[y0:y0+n, x0:x0+m] += |probe|²: accumulates the illumination of a scan."""
    if total.dtype != np.float32 or not total.flags.c_contiguous or total.ndim != 2:
        raise ValueError("total must be a C-contiguous 2-D float32 array")
    _check_patch(total, probe.shape, y0, x0)
    add_intensity_kernel(total, _complex_view(probe, "probe"), y0, x0, n_threads)


def modulus_constraint(
    wave_ft: np.ndarray, amplitude: np.ndarray, valid: np.ndarray, *, n_threads: int = 1
) -> float:
    """In place: |Ψ| ← measured amplitude on valid pixels, phase kept; masked pixels free.

    Returns Σ over valid pixels of (|Ψ| − A)² before the replacement: the Fourier error
    of this position, in the squared units of `amplitude`.
    """
    w = _complex_view(wave_ft, "wave_ft")
    if amplitude.shape != wave_ft.shape or valid.shape != wave_ft.shape:
        raise ValueError(
            f"amplitude {amplitude.shape} and valid {valid.shape} must match wave_ft "
            f"{wave_ft.shape}"
        )
    if amplitude.dtype != np.float32 or not amplitude.flags.c_contiguous:
        raise ValueError(f"amplitude must be C-contiguous float32, got {amplitude.dtype}")
    if valid.dtype != np.bool_:
        raise ValueError(f"valid must be bool (True = measured pixel), got {valid.dtype}")
    mask = np.ascontiguousarray(valid).view(np.uint8)
    return float(modulus_constraint_kernel(w, amplitude, mask, n_threads))


def update_object_probe(
    obj: np.ndarray,
    probe: np.ndarray,
    y0: int,
    x0: int,
    exit_wave: np.ndarray,
    revised: np.ndarray,
    *,
    alpha: float,
    beta: float,
    probe_max: float | None = None,
    object_max: float | None = None,
    regularised: bool = False,
    update_probe: bool = True,
    n_threads: int = 1,
) -> None:
    """In place: the ePIE (or, `regularised`, rPIE) update of O[patch] and P.

    ePIE: O += α P*Δ/max|P|², P += β O*Δ/max|O|², with Δ = revised − exit_wave.
    rPIE: O += P*Δ/((1−α)|P|² + α max|P|²), P likewise with β and O.
    `probe_max`, `object_max`: what `exit_wave` returned for this position (computed here
    when not given).
    """
    o, p = _complex_view(obj, "obj"), _complex_view(probe, "probe")
    e, r = _complex_view(exit_wave, "exit_wave"), _complex_view(revised, "revised")
    if exit_wave.shape != probe.shape or revised.shape != probe.shape:
        raise ValueError("exit_wave and revised must have the probe's shape")
    if not (0.0 < alpha <= 1.0 and 0.0 <= beta <= 1.0):
        raise ValueError(f"alpha must be in (0, 1] and beta in [0, 1], got {alpha}, {beta}")
    _check_patch(obj, probe.shape, y0, x0)
    if probe_max is None or object_max is None:
        ny, nx = probe.shape
        probe_max = float(np.max(np.abs(probe) ** 2))
        object_max = float(np.max(np.abs(obj[y0 : y0 + ny, x0 : x0 + nx]) ** 2))
    update_kernel(
        o,
        p,
        y0,
        x0,
        e,
        r,
        alpha,
        beta,
        probe_max,
        object_max,
        regularised,
        update_probe,
        n_threads,
    )
