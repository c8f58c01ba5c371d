"""One cryo-EM movie of realistic size (40 frames of 4096 x 4096, int8 counts, MRC) from
raw frames to a dose-weighted micrograph and its CTF, split by step, each step beside
its floor measured in the same run.

`process_movie` with the flow's default settings (gain reference applied, motion on
frames binned to 1024², 5 x 5 patches, 5 dose groups, CTF on 512² tiles) runs
`repeats` times, interleaved with its floors: one pass over the movie's frames in memory
(`numpy.copyto` of every frame of the memory-mapped movie into a preallocated frame),
the floor of `bin` and `sum` (each reads the movie once); and, for `motion`,
`dose_weight` and `ctf`, the FFTs that step did in that run (every `scipy.fft` call
recorded with its shapes and threads, replayed alone). Medians; each step's ratio to its
floor (`steps_over_floor`) is what load changes least. Target (issue 15): under 4 s per
movie on 2 cores. The movie is written to a temporary folder and read from the page
cache, as a movie that has just landed would be.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft

from benchmarks.timing import best_ms
from prefect_beamline.formats.mrc import MovieReader, write_mrc
from prefect_beamline.techniques.em.ctf import CTFParameters, Microscope
from prefect_beamline.techniques.em.movie import MovieSettings, process_movie
from prefect_beamline.techniques.em.synth import imaged

FULL = (40, 4096)
QUICK = (8, 512)
PIXEL_SIZE = 0.83
DOSE_PER_FRAME = 1.0  # e/Å² per frame: 40 e/Å² in all


def write_movie(folder: Path, n_frames: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """A movie with a known drift and CTF (integer shifts: cheap to make at 4k) and gain."""
    rng = np.random.default_rng(seed)
    texture = rng.standard_normal((size, size)).astype(np.float32)
    ctf = CTFParameters(16000.0, 15000.0, 30.0)
    clean = imaged(texture, ctf, Microscope(), PIXEL_SIZE).astype(np.float32)
    expected = np.clip(DOSE_PER_FRAME * PIXEL_SIZE**2 * (1 + 0.4 * clean), 0, None)
    frames = np.empty((n_frames, size, size), dtype=np.int8)
    for f in range(n_frames):
        shifted = np.roll(expected, (f // 3, f // 2), axis=(0, 1))
        frames[f] = np.minimum(rng.poisson(shifted), 127)
    del expected, clean, texture
    movie = write_mrc(folder / "movie.mrc", frames, PIXEL_SIZE)
    del frames
    gain = rng.normal(1.0, 0.05, (size, size)).astype(np.float32)
    return movie, write_mrc(folder / "gain.mrc", gain, 0.0)


def memory_pass_ms(movie: Path) -> float:
    """Best of 3: copy every frame of the (cached) movie once into one frame buffer."""
    with MovieReader(movie) as reader:
        buffer = np.empty(reader.shape, dtype=reader.dtype)

        def copy_frames() -> None:
            for f in range(reader.n_frames):
                np.copyto(buffer, reader.frame(f))

        return best_ms(copy_frames, 3)


# Which step a recorded FFT belongs to: the module of the code that called it.
FFT_STEPS = {
    "prefect_beamline.techniques.em.motion": "motion",
    "prefect_beamline.techniques.em.movie": "dose_weight",
    "prefect_beamline.techniques.em.ctf": "ctf",
}


@dataclass(frozen=True)
class FFTCall:
    """One scipy.fft call a step made: enough to make it again on data of that shape."""

    step: str
    function: Callable[..., Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@contextmanager
def recorded_ffts() -> Iterator[list[FFTCall]]:
    """Record every scipy.fft call (of `names`) made inside by a step's module."""
    calls: list[FFTCall] = []
    names = ("rfft2", "irfft2", "fft2", "ifft2", "ifft", "irfft")
    originals = {name: getattr(scipy.fft, name) for name in names}

    def recorder(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            step = FFT_STEPS.get(caller)
            if step is not None:
                array = np.asarray(x)
                calls.append(FFTCall(step, original, array.shape, array.dtype, args, kwargs))
            return original(x, *args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(scipy.fft, name, recorder(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(scipy.fft, name, original)


def replay_s(calls: list[FFTCall]) -> dict[str, float]:
    """Seconds of each step's recorded FFTs, replayed alone (on zeros: an FFT's time does
    not depend on the values)."""
    seconds: dict[str, float] = {}
    for call in calls:
        data = np.zeros(call.shape, dtype=call.dtype)
        started = time.perf_counter()
        call.function(data, *call.args, **call.kwargs)
        seconds[call.step] = seconds.get(call.step, 0.0) + time.perf_counter() - started
    return seconds


def run(quick: bool = False) -> dict[str, Any]:
    n_frames, size = QUICK if quick else FULL
    repeats = 3
    settings = MovieSettings(dose_per_frame=DOSE_PER_FRAME, ctf_tile=256 if quick else 512)
    load_before = os.getloadavg()
    runs: list[dict[str, float]] = []
    cpu_runs: list[dict[str, float]] = []
    floors: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="em-bench-") as folder:
        started = time.perf_counter()
        movie, gain = write_movie(Path(folder), n_frames, size)
        write_s = time.perf_counter() - started
        scipy.fft.rfft2(np.zeros((64, 64), np.float32), workers=-1)  # FFT plan caches warm
        for _ in range(repeats):
            memory_s = memory_pass_ms(movie) / 1000.0
            with recorded_ffts() as calls:
                start, start_cpu = time.perf_counter(), time.process_time()
                result = process_movie(movie, gain, settings)
                per_movie_s = time.perf_counter() - start
                cpu_s = time.process_time() - start_cpu
            fft_s = replay_s(calls)
            del calls
            runs.append({**result.wall_seconds, "per_movie": per_movie_s})
            cpu_runs.append({**result.cpu_seconds, "per_movie": cpu_s})
            floors.append({"bin": memory_s, "sum": memory_s, **fft_s, "memory_pass": memory_s})
    steps = _medians(runs)
    floor = _medians(floors)
    truth = np.array([[f // 2, f // 3] for f in range(n_frames)], dtype=float)
    per_movie_s = steps.pop("per_movie")
    return {
        "benchmark": "em",
        "frames": n_frames,
        "shape": [size, size],
        "dtype": "int8",
        "cores": os.cpu_count() or 1,
        "repeats": repeats,
        "per_movie_s": round(per_movie_s, 3),
        "per_movie_cpu_s": round(_medians(cpu_runs)["per_movie"], 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "steps": {step: round(seconds, 3) for step, seconds in steps.items()},
        "steps_cpu": {
            step: round(seconds, 3)
            for step, seconds in _medians(cpu_runs).items()
            if step != "per_movie"
        },
        "floors": {
            step: round(floor[step], 6) for step in ("bin", "motion", "dose_weight", "sum", "ctf")
        },
        "floor_kind": {
            "bin": "one memory pass over the movie",
            "sum": "one memory pass over the movie",
            "motion": "its FFTs alone (scipy.fft, same shapes and threads)",
            "dose_weight": "its FFTs alone (5 rfft2 + 1 irfft2 of the full frame)",
            "ctf": "its FFTs alone",
        },
        "steps_over_floor": {
            step: round(steps[step] / floor[step], 2)
            for step in ("bin", "motion", "dose_weight", "sum", "ctf")
            if floor.get(step)
        },
        "memory_pass_ms": round(1000 * floor["memory_pass"], 1),
        "per_movie_over_memory_pass": round(per_movie_s / floor["memory_pass"], 1),
        "binning_for_motion": result.binning,
        "max_shift_error_px": round(float(np.abs(result.motion.global_shifts - truth).max()), 3),
        "defocus_u": round(result.ctf.parameters.defocus_u, 1),
        "defocus_v": round(result.ctf.parameters.defocus_v, 1),
        "true_defocus": [16000.0, 15000.0],
        "fit_resolution_angstrom": round(result.ctf.fit_resolution_angstrom, 2),
        "synthetic_movie_write_s": round(write_s, 1),
        "target_s": 4.0,
    }


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the runs that have it."""
    keys = {key for sample in samples for key in sample}
    return {key: statistics.median(s[key] for s in samples if key in s) for key in keys}


def report(result: dict[str, Any]) -> str:
    steps = ", ".join(f"{step} {seconds:.2f} s" for step, seconds in result["steps"].items())
    return "\n".join(
        [
            f"cryo-EM movie {result['frames']} x {result['shape'][0]}² {result['dtype']}, "
            f"{result['cores']} cores",
            f"per movie      {result['per_movie_s']:.2f} s (target < {result['target_s']} s), "
            f"{result['per_movie_cpu_s']:.2f} s CPU, load {result['load_average_1min']}",
            f"steps          {steps}",
            "floors         " + ", ".join(f"{k} {v:.2f} s" for k, v in result["floors"].items()),
            "step / floor   "
            + ", ".join(f"{k} {v:.1f}x" for k, v in result["steps_over_floor"].items()),
            "steps (CPU)    " + ", ".join(f"{k} {v:.2f} s" for k, v in result["steps_cpu"].items()),
            f"memory pass    {result['memory_pass_ms']:.0f} ms "
            f"(per movie = {result['per_movie_over_memory_pass']}x)",
            f"shift error    {result['max_shift_error_px']} px; defocus "
            f"{result['defocus_u']:.0f}/{result['defocus_v']:.0f} Å (truth 16000/15000)",
        ]
    )
