"""ePIE / rPIE iterations and their error metric.

The driver of the `ext.epie` kernels: positions in a random order each iteration (a
seed per iteration, so a run resumed from a checkpoint takes the same path), and per
position two in-place complex64 FFTs (FFTW through pyFFTW, planned once: `fft.py`)
between three fused Cython passes (exit wave, modulus constraint, object/probe update),
all in one kernel call per iteration.

Conventions: measured amplitudes √I and the valid mask are held in FFT order (zero
frequency at [0, 0]); FFTs are orthonormal, so Σ|Ψ|² = Σ|ψ|² and the probe carries the
photon scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from prefect_beamline.ext.epie import add_intensity, epie_positions, epie_positions_blocks
from prefect_beamline.techniques.ptycho.fft import (
    BlockFFT,
    InPlaceFFT2,
    block_fft_available,
    plan_block_fft,
    plan_fft2,
)

ALGORITHMS = ("epie", "rpie")


@dataclass
class Reconstruction:
    """Object and probe after `iteration` iterations, and the error of each iteration."""

    obj: np.ndarray  # complex64 (ny, nx)
    probe: np.ndarray  # complex64 (n, n), or (modes, n, n) for mixed-state ePIE
    iteration: int = 0
    errors: list[float] = field(default_factory=list)


def positions_in_pixels(
    positions_m: np.ndarray,
    object_pixel_m: tuple[float, float],
    pattern_shape: tuple[int, int],
    subpixel: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(row, column) patch corners in object pixels from motor positions, and the
    object's shape; the first row and column of the object are the lowest positions.

    Rounded to the nearest pixel (int64), or with `subpixel` kept as they are (float64:
    the kernels interpolate the object between pixels; the object is a pixel larger
    each way, as a fractional patch covers one more row and column).
    """
    pixels = positions_m / np.asarray(object_pixel_m)[None, :]
    pixels = pixels - pixels.min(axis=0)
    if subpixel:
        grid = object_grid_shape(np.floor(pixels).astype(np.int64), pattern_shape)
        return pixels.astype(np.float64), (grid[0] + 1, grid[1] + 1)
    corners = np.rint(pixels).astype(np.int64)
    return corners, object_grid_shape(corners, pattern_shape)


def object_grid_shape(corners: np.ndarray, pattern_shape: tuple[int, int]) -> tuple[int, int]:
    """The object grid a scan covers: its farthest patch corner plus one pattern, per axis
    (corners are integer (row, column) offsets from the grid's first pixel)."""
    return (
        int(corners[:, 0].max()) + pattern_shape[0],
        int(corners[:, 1].max()) + pattern_shape[1],
    )


def detector_to_fft_order(image: np.ndarray) -> np.ndarray:
    """A detector-order (beam in the centre) image in FFT order (zero frequency at 0, 0)."""
    return np.ascontiguousarray(np.fft.ifftshift(image, axes=(-2, -1)))


def initial_probe(mean_amplitude_fft: np.ndarray, valid_fft: np.ndarray) -> np.ndarray:
    """A probe guess: the inverse FFT of the scan's mean amplitude (flat phase), centred.

    Its power matches the mean measured power, and its size matches the probe's angular
    spread; ePIE refines the rest.
    """
    amplitude = np.where(valid_fft, mean_amplitude_fft, 0.0)
    probe = scipy.fft.ifft2(amplitude.astype(np.complex64), norm="ortho")
    probe = np.fft.fftshift(probe)
    measured_power = float(np.sum(mean_amplitude_fft[valid_fft] ** 2)) / valid_fft.mean()
    probe *= np.sqrt(measured_power / max(float(np.sum(np.abs(probe) ** 2)), 1e-30))
    return np.ascontiguousarray(probe, dtype=np.complex64)


def initial_probe_modes(probe: np.ndarray, modes: int, weak: float = 0.05) -> np.ndarray:
    """(modes, n, n) starting probes for mixed-state ePIE from one probe: mode 0 the
    probe, each further mode the probe with a phase ramp of m cycles across it (its far
    field shifted by m pixels, so the modes start distinct) carrying `weak` of the
    power; the total power is the probe's."""
    if modes < 1:
        raise ValueError(f"modes must be at least 1, got {modes}")
    single = probe[0] if probe.ndim == 3 else probe
    if modes == 1:
        return np.ascontiguousarray(single[np.newaxis], dtype=np.complex64)
    n = single.shape[1]
    ramp = np.exp(2j * np.pi * np.arange(n) / n)[np.newaxis, :]
    stack = [single * np.sqrt(1.0 - weak * (modes - 1))]
    stack += [single * ramp**m * np.sqrt(weak) for m in range(1, modes)]
    return np.ascontiguousarray(np.stack(stack), dtype=np.complex64)


def initial_object(shape: tuple[int, int]) -> np.ndarray:
    """A transparent object: ones."""
    return np.ones(shape, dtype=np.complex64)


def position_order(n_positions: int, iteration: int, seed: int = 0) -> np.ndarray:
    """The random visiting order of one iteration, reproducible from the iteration number."""
    return np.random.default_rng((seed, iteration)).permutation(n_positions)


def plan_iteration_fft(
    pattern_shape: tuple[int, int], n_threads: int = 1, modes: int = 1
) -> BlockFFT | InPlaceFFT2:
    """The FFTs an iteration runs on: the fused pass's block plans where FFTW's C library
    is reachable, else (one mode only) an in-place 2-D pair."""
    if block_fft_available():
        return plan_block_fft(pattern_shape, modes)
    if modes != 1:
        raise ValueError("probe modes need FFTW's C library (pyFFTW), not found here")
    return plan_fft2(pattern_shape, n_threads)


def epie_iteration(
    state: Reconstruction,
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    *,
    algorithm: str = "epie",
    alpha: float = 1.0,
    beta: float = 1.0,
    update_probe: bool = True,
    n_threads: int = 1,
    seed: int = 0,
    measured_power: float | None = None,
    fft: BlockFFT | InPlaceFFT2 | None = None,
) -> float:
    """One pass over every position, in place on `state`; returns the normalised error.

    `fft`: the block plans of the fused pass (`plan_block_fft`, the only path for probe
    modes: `state.probe` of shape (modes, n, n)) or an in-place 2-D FFT pair
    (`plan_fft2`), planned once by a caller that iterates; `plan_iteration_fft` when not
    given. The block pass runs its blocks on `n_threads` threads; the 2-D pair's passes
    run on one thread and its FFTs on `n_threads` (at pattern sizes up to 512² a pass
    takes tens of microseconds, less than a parallel region's fork and barrier on a busy
    machine: at load ~12, 2 OpenMP threads made a 64-position iteration take 20.7 s
    instead of 0.025 s).

    The error is Σ_positions Σ_valid (|Ψ| − √I)² / Σ_positions Σ_valid I: the Fourier
    magnitude misfit before each position's update, relative to the measured photons
    (`measured_power`, Σ valid I, computed when not given).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    modes = state.probe.shape[0] if state.probe.ndim == 3 else 1
    if fft is None:
        fft = plan_iteration_fft(amplitudes.shape[1:], n_threads, modes)
    order = position_order(len(positions), state.iteration, seed)
    if isinstance(fft, BlockFFT):
        probes = state.probe if state.probe.ndim == 3 else state.probe[np.newaxis]
        error = epie_positions_blocks(
            state.obj,
            probes,
            fft,
            amplitudes,
            valid,
            positions,
            order,
            alpha=alpha,
            beta=beta,
            regularised=algorithm == "rpie",
            update_probe=update_probe,
            n_threads=n_threads,
        )
    else:
        if modes != 1:
            raise ValueError("probe modes need the block plans (plan_block_fft)")
        error = epie_positions(
            state.obj,
            state.probe,
            fft.buffer,
            fft.forward,
            fft.backward,
            amplitudes,
            valid,
            positions,
            order,
            alpha=alpha,
            beta=beta,
            regularised=algorithm == "rpie",
            update_probe=update_probe,
            n_threads=1,  # see the docstring: threads go to the FFTs
        )
    state.iteration += 1
    if measured_power is None:
        measured_power = total_measured_power(amplitudes, valid)
    normalised = error / max(measured_power, 1e-30)
    state.errors.append(normalised)
    return normalised


def total_measured_power(amplitudes: np.ndarray, valid: np.ndarray) -> float:
    """Σ over positions and valid pixels of the measured intensity (amplitude²)."""
    return float(np.einsum("nij,nij,ij->", amplitudes, amplitudes, valid, dtype=np.float64))


def run_iterations(
    state: Reconstruction,
    amplitudes: np.ndarray,
    valid: np.ndarray,
    positions: np.ndarray,
    until: int,
    *,
    algorithm: str = "epie",
    alpha: float = 1.0,
    beta: float = 1.0,
    probe_update_start: int = 1,
    n_threads: int = 1,
    every: int = 0,
    on_block: Callable[[Reconstruction], None] | None = None,
) -> Reconstruction:
    """Iterate until `state.iteration == until`, calling `on_block` every `every`
    iterations (a checkpoint, a progress report)."""
    measured_power = total_measured_power(amplitudes, valid)
    modes = state.probe.shape[0] if state.probe.ndim == 3 else 1
    fft = plan_iteration_fft(amplitudes.shape[1:], n_threads, modes)
    while state.iteration < until:
        epie_iteration(
            state,
            amplitudes,
            valid,
            positions,
            algorithm=algorithm,
            alpha=alpha,
            beta=beta,
            update_probe=state.iteration >= probe_update_start,
            n_threads=n_threads,
            measured_power=measured_power,
            fft=fft,
        )
        if on_block is not None and every and state.iteration % every == 0:
            on_block(state)
    return state


def illumination(probe: np.ndarray, positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Σ over positions (sub-pixel ones rounded) of |P|² on the object grid (float32)."""
    total = np.zeros(shape, dtype=np.float32)
    probe = np.ascontiguousarray(probe, dtype=np.complex64)
    for y0, x0 in np.rint(positions).astype(np.int64):
        y0, x0 = min(int(y0), shape[0] - probe.shape[0]), min(int(x0), shape[1] - probe.shape[1])
        add_intensity(total, probe, y0, x0)
    return total


def scanned_area(
    probe: np.ndarray, positions: np.ndarray, shape: tuple[int, int], fraction: float = 0.3
) -> np.ndarray:
    """Object pixels lit by at least `fraction` of the brightest pixel's dose."""
    lit = illumination(probe, positions, shape)
    return np.asarray(lit >= fraction * lit.max())
