"""One cryo-EM movie from raw frames to a dose-weighted micrograph and its CTF.

The procedure, each step timed (the benchmark and the flow report the split):

1. `bin`: read each frame once, gain-correct and bin it for motion estimation (a few
   frames per kernel call, so the gain is read once per call, not per frame);
2. `motion`: global then patch motion on the binned frames (FFTs in scipy);
3. `sum`: read each frame again, gain-correct, shift by the motion field (bilinear,
   full resolution) and add it to its dose group's sum (Cython, tiles in parallel, every
   frame of a call added to a tile before the next tile: the sum and the gain are read
   once per call);
4. `dose_weight`: FFT each group sum, weight it for its exposure (Grant & Grigorieff
   critical exposure), normalise, inverse FFT;
5. `ctf`: fit defocus U/V, angle and fit resolution to the Thon rings.

No frame stack is kept at full resolution: memory is the binned stack, one group sum
and the Fourier accumulator.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft

from prefect_beamline.ext.motioncor import (
    dose_accumulate,
    dose_normalise,
    half_inverse_critical_exposure,
)
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.mrc import EERRendering, MovieReader, read_gain_reference
from prefect_beamline.techniques.em.ctf import CTFFit, Microscope, fit_ctf
from prefect_beamline.techniques.em.frame_groups import add_shifted, binned_frames
from prefect_beamline.techniques.em.motion import MotionModel, accumulated_motion, estimate_motion

# RELION counts "early" motion over the first 4 e/Å² of exposure.
EARLY_EXPOSURE = 4.0


@dataclass(frozen=True)
class MovieSettings:
    """Everything the per-movie computation needs, in physical units."""

    pixel_size_angstrom: float | None = None
    dose_per_frame: float = 1.0
    pre_exposure: float = 0.0
    microscope: Microscope = field(default_factory=Microscope)
    patches: tuple[int, int] = (5, 5)
    alignment_size: int = 1024
    bfactor_angstrom2: float = 500.0
    patch_bfactor_angstrom2: float = 150.0
    dose_groups: int = 5
    dose_weighting: bool = True
    ctf_tile: int = 512
    ctf_min_resolution: float = 30.0
    ctf_max_resolution: float = 4.0
    min_defocus: float = 3000.0
    max_defocus: float = 50000.0
    # EER movies only: frames summed per dose fraction, and 4K (1) or 8K (2) rendering.
    eer: EERRendering = field(default_factory=EERRendering)


@dataclass
class MovieResult:
    """What one movie gave: motion, micrograph, CTF, and seconds per step."""

    n_frames: int
    shape: tuple[int, int]
    pixel_size_angstrom: float
    binning: int
    motion: MotionModel
    micrograph: np.ndarray
    ctf: CTFFit
    spectrum: np.ndarray
    timings: dict[str, float]

    @property
    def wall_seconds(self) -> dict[str, float]:
        """Wall time per step."""
        return {k: v for k, v in self.timings.items() if not k.startswith("cpu:")}

    @property
    def cpu_seconds(self) -> dict[str, float]:
        """CPU time per step (all threads of the process)."""
        return {k[4:]: v for k, v in self.timings.items() if k.startswith("cpu:")}

    @property
    def frame_motion_angstrom(self) -> np.ndarray:
        return accumulated_motion(self.motion.global_shifts) * self.pixel_size_angstrom

    def motion_totals(
        self, dose_per_frame: float, pre_exposure: float
    ) -> tuple[float, float, float]:
        """RELION's accumulated motion (Å): total, early (first 4 e/Å²), late."""
        steps = self.frame_motion_angstrom
        exposure_at_end = pre_exposure + dose_per_frame * np.arange(2, self.n_frames + 1)
        early = float(steps[exposure_at_end <= EARLY_EXPOSURE].sum())
        total = float(steps.sum())
        return total, early, total - early


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the step's wall time to timings[step], its CPU time to timings["cpu:" + step]."""
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start
        cpu = f"cpu:{step}"
        timings[cpu] = timings.get(cpu, 0.0) + time.process_time() - start_cpu


def binning_for(shape: tuple[int, int], alignment_size: int) -> int:
    """The integer binning that brings the larger frame side to at most alignment_size."""
    return max(1, math.ceil(max(shape) / alignment_size))


def dose_groups(n_frames: int, n_groups: int) -> list[range]:
    """Consecutive frame ranges, as even as possible."""
    n_groups = max(1, min(n_groups, n_frames))
    edges = np.linspace(0, n_frames, n_groups + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def process_movie(
    movie: str | Path,
    gain_reference: str | Path | None,
    settings: MovieSettings,
    n_threads: int = 0,
) -> MovieResult:
    """Motion-correct, dose-weight and CTF-fit one movie (see the module docstring).

    `n_threads` is where the kernels run (0: all cores), not what they compute.
    """
    timings: dict[str, float] = {}
    with _timed(timings, "open"), MovieReader(movie, settings.eer) as reader:
        reader.check_complete()
        pixel_size = settings.pixel_size_angstrom or reader.pixel_size_angstrom
        if not pixel_size:
            raise DataFileError(
                f"{reader.path}: no pixel size in the header; set pixel_size_angstrom"
            )
        if reader.n_frames < 2:
            raise DataFileError(f"{reader.path}: a movie needs at least 2 frames, got 1")
        gain = read_gain_reference(gain_reference, reader.shape) if gain_reference else None
        binning = binning_for(reader.shape, settings.alignment_size)
        n_frames, shape = reader.n_frames, reader.shape
    with MovieReader(movie, settings.eer) as reader:
        with _timed(timings, "bin"):
            binned = binned_frames(reader, gain, binning, n_threads)
        with _timed(timings, "motion"):
            motion = estimate_motion(
                binned,
                binning,
                patches=settings.patches,
                bfactor_pixels=settings.bfactor_angstrom2 / (pixel_size * binning) ** 2,
                patch_bfactor_pixels=settings.patch_bfactor_angstrom2 / (pixel_size * binning) ** 2,
            )
        del binned
        micrograph = _weighted_sum(reader, gain, motion, settings, pixel_size, timings, n_threads)
    with _timed(timings, "ctf"):
        fit, spectrum = fit_ctf(
            micrograph,
            pixel_size,
            settings.microscope,
            tile=settings.ctf_tile,
            min_resolution=settings.ctf_min_resolution,
            max_resolution=settings.ctf_max_resolution,
            min_defocus=settings.min_defocus,
            max_defocus=settings.max_defocus,
        )
    return MovieResult(
        n_frames, shape, pixel_size, binning, motion, micrograph, fit, spectrum, timings
    )


def _weighted_sum(
    reader: MovieReader,
    gain: np.ndarray | None,
    motion: MotionModel,
    settings: MovieSettings,
    pixel_size: float,
    timings: dict[str, float],
    threads: int,
) -> np.ndarray:
    """Shifted frames summed per dose group, each group weighted for its exposure."""
    shape = reader.shape
    if not settings.dose_weighting:
        total = np.zeros(shape, dtype=np.float32)
        with _timed(timings, "sum"):
            for group in dose_groups(reader.n_frames, settings.dose_groups):
                add_shifted(reader, group, gain, motion.coefficients, total, threads)
        return total
    spectrum_shape = (shape[0], shape[1] // 2 + 1)
    acc = np.zeros(spectrum_shape, dtype=np.complex64)
    weight_sq = np.zeros(spectrum_shape, dtype=np.float32)
    group_sum = np.empty(shape, dtype=np.float32)
    with _timed(timings, "dose_weight"):
        half_inverse_ne = half_inverse_critical_exposure(
            shape, pixel_size, settings.microscope.voltage_kv, threads
        )
    for group in dose_groups(reader.n_frames, settings.dose_groups):
        group_sum.fill(0.0)
        with _timed(timings, "sum"):
            add_shifted(reader, group, gain, motion.coefficients, group_sum, threads)
        with _timed(timings, "dose_weight"):
            mid_exposure = settings.pre_exposure + settings.dose_per_frame * (
                0.5 * (group.start + group.stop)
            )
            dose_accumulate(
                scipy.fft.rfft2(group_sum, workers=-1),
                acc,
                weight_sq,
                half_inverse_ne,
                dose=mid_exposure,
                n_frames=len(group),
                n_threads=threads,
            )
    with _timed(timings, "dose_weight"):
        dose_normalise(acc, weight_sq, reader.n_frames, threads)
        micrograph = scipy.fft.irfft2(acc, s=shape, workers=-1)
    return np.asarray(micrograph, dtype=np.float32)
