"""Per-position ePIE/rPIE kernels on complex64 arrays: the public face of `_epie`.

Each function checks shapes, dtypes and bounds (with `prefect_beamline.ext.arguments`),
then calls a Cython kernel that releases the GIL and splits rows over `n_threads`
OpenMP threads (None or 0: every core). Object, probe and waves are C-contiguous
complex64; measured amplitudes float32 in FFT order (the zero frequency at [0, 0], as
`scipy.fft.fft2` returns it); `valid` is a bool mask.

`epie_positions` runs a whole iteration's positions in one call (the driver's fast
path); the per-position faces are its parts, kept for tests and for callers that need
one step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from prefect_beamline.ext._epie import (
    add_intensity_kernel,
    block_fft_pairs_kernel,
    epie_blocks_kernel,
    epie_positions_kernel,
    exit_wave_kernel,
    extract_patch_kernel,
    modulus_constraint_kernel,
    update_kernel,
)
from prefect_beamline.ext.arguments import (
    kernel_input,
    kernel_threads,
    require_array,
    require_buffer,
    require_integer,
    require_number,
    require_same_shape,
    require_shape,
)


def _complex_view(array: np.ndarray, name: str) -> np.ndarray:
    """A float32 (ny, 2·nx) view of a C-contiguous complex64 array (no copy)."""
    require_buffer(name, array, np.complex64, ndim=2)
    return array.view(np.float32)


def _check_patch(
    obj: np.ndarray, shape: tuple[int, ...], y0: int, x0: int, *, obj_name: str = "object"
) -> tuple[int, int]:
    """(y0, x0) as ints, once the patch of `shape` at (y0, x0) is inside `obj`."""
    y0 = require_integer("y0", y0)
    x0 = require_integer("x0", x0)
    ny, nx = shape
    if y0 < 0 or x0 < 0 or y0 + ny > obj.shape[0] or x0 + nx > obj.shape[1]:
        raise ValueError(
            f"patch {ny}x{nx} at (y0={y0}, x0={x0}) falls outside the {obj_name} {obj.shape}"
        )
    return y0, x0


def _step_sizes(alpha: float, beta: float) -> tuple[float, float]:
    """(alpha, beta) checked: alpha in (0, 1], beta in [0, 1]."""
    alpha = require_number("alpha", alpha)
    beta = require_number("beta", beta)
    if not (0.0 < alpha <= 1.0 and 0.0 <= beta <= 1.0):
        raise ValueError(f"alpha must be in (0, 1] and beta in [0, 1], got {alpha}, {beta}")
    return alpha, beta


def exit_wave(
    obj: np.ndarray,
    probe: np.ndarray,
    y0: int,
    x0: int,
    out: np.ndarray,
    *,
    n_threads: int | None = 1,
) -> tuple[float, float]:
    """out = probe · obj[y0:y0+n, x0:x0+m]: the wave leaving the sample at one position.

    Returns (max |P|², max |O[patch]|²), read in the same pass, for `update_object_probe`.
    """
    o, p, w = (_complex_view(a, n) for a, n in ((obj, "obj"), (probe, "probe"), (out, "out")))
    require_same_shape(probe=probe, out=out)
    y0, x0 = _check_patch(obj, probe.shape, y0, x0)
    probe_max, object_max = exit_wave_kernel(o, p, y0, x0, w, kernel_threads(n_threads))
    return float(probe_max), float(object_max)


def extract_patch(
    obj: np.ndarray, y0: int, x0: int, out: np.ndarray, *, n_threads: int | None = 1
) -> np.ndarray:
    """out = obj[y0:y0+n, x0:x0+m] into a preallocated buffer."""
    o, w = _complex_view(obj, "obj"), _complex_view(out, "out")
    y0, x0 = _check_patch(obj, out.shape, y0, x0)
    extract_patch_kernel(o, y0, x0, w, kernel_threads(n_threads))
    return out


def add_intensity(
    total: np.ndarray, probe: np.ndarray, y0: int, x0: int, *, n_threads: int | None = 1
) -> None:
    """total[y0:y0+n, x0:x0+m] += |probe|²: accumulates the illumination of a scan."""
    require_buffer("total", total, np.float32, ndim=2)
    p = _complex_view(probe, "probe")
    y0, x0 = _check_patch(total, probe.shape, y0, x0, obj_name="total")
    add_intensity_kernel(total, p, y0, x0, kernel_threads(n_threads))


def modulus_constraint(
    wave_ft: np.ndarray, amplitude: np.ndarray, valid: np.ndarray, *, n_threads: int | None = 1
) -> float:
    """In place: |Ψ| ← measured amplitude on valid pixels, phase kept; masked pixels free.

    Returns Σ over valid pixels of (|Ψ| − A)² before the replacement: the Fourier error
    of this position, in the squared units of `amplitude`.
    """
    w = _complex_view(wave_ft, "wave_ft")
    require_buffer("amplitude", amplitude, np.float32)
    require_array("valid", valid, dtypes=(np.bool_,))
    require_same_shape(wave_ft=wave_ft, amplitude=amplitude, valid=valid)
    mask = np.ascontiguousarray(valid).view(np.uint8)
    return float(modulus_constraint_kernel(w, amplitude, mask, kernel_threads(n_threads)))


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
    n_threads: int | None = 1,
) -> None:
    """In place: the ePIE (or, `regularised`, rPIE) update of O[patch] and P.

    ePIE: O += α P*Δ/max|P|², P += β O*Δ/max|O|², with Δ = revised − exit_wave.
    rPIE: O += P*Δ/((1−α)|P|² + α max|P|²), P likewise with β and O.
    `probe_max`, `object_max`: what `exit_wave` returned for this position (computed here
    when not given).
    """
    o, p = _complex_view(obj, "obj"), _complex_view(probe, "probe")
    e, r = _complex_view(exit_wave, "exit_wave"), _complex_view(revised, "revised")
    require_same_shape(probe=probe, exit_wave=exit_wave, revised=revised)
    alpha, beta = _step_sizes(alpha, beta)
    y0, x0 = _check_patch(obj, probe.shape, y0, x0)
    if probe_max is None or object_max is None:
        ny, nx = probe.shape
        probe_max = float(np.max(np.abs(probe) ** 2))
        object_max = float(np.max(np.abs(obj[y0 : y0 + ny, x0 : x0 + nx]) ** 2))
    else:
        probe_max = require_number("probe_max", probe_max, at_least=0.0)
        object_max = require_number("object_max", object_max, at_least=0.0)
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
        kernel_threads(n_threads),
    )


def _check_scan(
    obj: np.ndarray,
    shape: tuple[int, ...],
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    order: np.ndarray,
    margin: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(corners, order) as int64 once the amplitudes, mask, positions and order fit a
    probe of `shape` and the object (every patch, `margin` pixels wider, inside it)."""
    require_buffer("amplitudes", amplitudes, np.float32, ndim=3, axes="(position, ny, nx)")
    require_shape("amplitudes", amplitudes, (len(amplitudes), *shape), source="probe")
    require_array("valid", valid, dtypes=(np.bool_,))
    if valid.shape != tuple(shape):
        raise ValueError(f"valid shape {valid.shape} differs from probe shape {tuple(shape)}")
    corners = kernel_input(
        "positions",
        positions,
        np.int64,
        (len(amplitudes), 2),
        source="amplitudes' (position, 2)",
        kinds="iu",
    )
    ny, nx = shape[0] + margin, shape[1] + margin
    if len(corners) and (
        corners.min() < 0
        or corners[:, 0].max() + ny > obj.shape[0]
        or corners[:, 1].max() + nx > obj.shape[1]
    ):
        raise ValueError(
            f"positions: a {ny}x{nx} patch at corners from {corners.min(axis=0).tolist()} to "
            f"{corners.max(axis=0).tolist()} falls outside the object {obj.shape}"
        )
    visit = kernel_input("order", order, np.int64, (len(order),), source="order", kinds="iu")
    if len(visit) and (visit.min() < 0 or visit.max() >= len(amplitudes)):
        raise ValueError(
            f"order must index the {len(amplitudes)} positions, got {visit.min()}..{visit.max()}"
        )
    return corners, visit


def epie_positions(
    obj: np.ndarray,
    probe: np.ndarray,
    wave: np.ndarray,
    forward: Callable[[], object],
    backward: Callable[[], object],
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    order: np.ndarray,
    *,
    alpha: float,
    beta: float,
    regularised: bool = False,
    update_probe: bool = True,
    n_threads: int | None = 1,
) -> float:
    """One ePIE (or, `regularised`, rPIE) pass over the positions in `order`, in place.

    `wave` is a complex64 buffer of the probe's shape; `forward()` and `backward()`
    transform it in place, unnormalised (see `prefect_beamline.techniques.ptycho.fft`).
    `amplitudes` (positions, ny, nx) float32 and `valid` bool in FFT order; `positions`
    (positions, 2) integer patch corners (row, column) in the object. Returns
    Σ positions Σ valid (|Ψ| − √I)², Ψ the orthonormal far field before each update.
    """
    o, p, w = (_complex_view(a, n) for a, n in ((obj, "obj"), (probe, "probe"), (wave, "wave")))
    require_same_shape(probe=probe, wave=wave)
    corners, visit = _check_scan(obj, probe.shape, amplitudes, valid, positions, order)
    alpha, beta = _step_sizes(alpha, beta)
    mask = np.ascontiguousarray(valid).view(np.uint8)
    return float(
        epie_positions_kernel(
            o,
            p,
            w,
            amplitudes,
            mask,
            corners,
            visit,
            forward,
            backward,
            alpha,
            beta,
            regularised,
            update_probe,
            kernel_threads(n_threads),
        )
    )


def _split_positions(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(integer corners, float32 fractions in [0, 1]) of integer or float positions."""
    array = np.asarray(positions)
    if array.dtype.kind != "f":
        return array, np.zeros(array.shape, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError("positions must be finite")
    corners = np.floor(array)
    return corners.astype(np.int64), np.ascontiguousarray(array - corners, dtype=np.float32)


class BlockPlans(Protocol):
    """What `epie_positions_blocks` needs of `techniques.ptycho.fft.BlockFFT`."""

    @property
    def buffer(self) -> np.ndarray: ...
    @property
    def execute(self) -> int: ...
    @property
    def plans(self) -> np.ndarray: ...
    @property
    def rows(self) -> int: ...
    @property
    def cols(self) -> int: ...
    @property
    def aligned(self) -> bool: ...


def epie_positions_blocks(
    obj: np.ndarray,
    probes: np.ndarray,
    fft: BlockPlans,
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    order: np.ndarray,
    *,
    alpha: float,
    beta: float,
    regularised: bool = False,
    update_probe: bool = True,
    n_threads: int | None = 1,
) -> float:
    """`epie_positions` with the FFTs taken apart into cache-sized blocks, and probe modes.

    `probes` (modes, ny, nx) complex64 (one mode: (1, ny, nx)); `fft` the plans and wave
    buffer of `plan_block_fft` for that shape and number of modes. `positions` may be
    fractional (float): a patch at a fractional corner is the bilinear interpolation of
    the (ny + 1, nx + 1) object pixels from its integer part, and the object step goes
    back through the same weights. With several modes
    the modulus constraint scales every mode's far field by √I / √(Σ_m |Ψ_m|²), the
    object step uses Σ_m P_m*Δ_m over Σ_m |P_m|², and each mode's step is the
    single-mode one. Returns Σ positions Σ valid (√(Σ_m |Ψ_m|²) − √I)².
    """
    require_buffer("obj", obj, np.complex64, ndim=2)
    require_buffer("probes", probes, np.complex64, ndim=3, axes="(mode, ny, nx)")
    wave = fft.buffer
    require_buffer("fft.buffer", wave, np.complex64, ndim=3, axes="(mode, ny, stride)")
    if wave.shape[:2] != probes.shape[:2] or wave.shape[2] < probes.shape[2]:
        raise ValueError(
            f"fft.buffer shape {wave.shape} does not hold the probes' {probes.shape}"
            " (modes, ny the same, rows at least nx long)"
        )
    if fft.aligned and wave.ctypes.data % 64:
        raise ValueError("fft.buffer must start on 64 bytes, as the plans were made for")
    if len(fft.plans) != 8:
        raise ValueError(f"fft.plans must hold 8 plan addresses, got {len(fft.plans)}")
    corners, fractions = _split_positions(positions)
    subpixel = bool(np.any(fractions))
    corners, visit = _check_scan(
        obj, probes.shape[1:], amplitudes, valid, corners, order, margin=int(subpixel)
    )
    alpha, beta = _step_sizes(alpha, beta)
    mask = np.ascontiguousarray(valid).view(np.uint8)
    return float(
        epie_blocks_kernel(
            obj.view(np.float32),
            probes.view(np.float32),
            wave.view(np.float32),
            amplitudes,
            mask,
            corners,
            visit,
            fractions,
            subpixel,
            fft.execute,
            np.ascontiguousarray(fft.plans, dtype=np.uint64),
            fft.rows,
            fft.cols,
            alpha,
            beta,
            regularised,
            update_probe,
            kernel_threads(n_threads),
        )
    )


def block_fft_pairs(fft: BlockPlans, nx: int, repeats: int) -> None:
    """`repeats` unnormalised forward + inverse 2-D FFTs of each mode of `fft.buffer`
    (first `nx` columns) in place, through the block plans as the fused pass runs them:
    each pair multiplies the waves by ny·nx. The FFTs of the fused pass alone."""
    wave = fft.buffer
    require_buffer("fft.buffer", wave, np.complex64, ndim=3, axes="(mode, ny, stride)")
    nx = require_integer("nx", nx, minimum=1)
    if nx > wave.shape[2]:
        raise ValueError(f"nx {nx} is wider than fft.buffer's rows ({wave.shape[2]})")
    block_fft_pairs_kernel(
        wave.view(np.float32),
        nx,
        fft.execute,
        np.ascontiguousarray(fft.plans, dtype=np.uint64),
        fft.rows,
        fft.cols,
        require_integer("repeats", repeats, minimum=0),
    )
