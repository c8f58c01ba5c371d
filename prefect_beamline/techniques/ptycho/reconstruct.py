"""One scan from its file to object and probe, checkpointed: what the flow's task runs.

Reads the patterns chunk by chunk into amplitudes, starts from the checkpoint of an
earlier attempt with the same key (or a fresh guess, or an earlier run's probe),
iterates, and writes `reconstruction.h5`. A checkpoint's key holds the scan's signature,
the starting probe and the settings that shape the iterations: never the iteration
count (a checkpoint at 40 is a valid start for a run asking 100), never where or on how
many threads it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.ptycho import PtychoScan
from prefect_beamline.techniques.ptycho.analysis import (
    Reconstruction,
    detector_to_fft_order,
    initial_object,
    initial_probe,
    initial_probe_modes,
    positions_in_pixels,
    run_iterations,
)
from prefect_beamline.techniques.ptycho.records import PtychoResult
from prefect_beamline.techniques.ptycho.results_file import (
    CHECKPOINT_FILE,
    RECONSTRUCTION_FILE,
    read_checkpoint,
    read_reconstruction,
    write_reconstruction,
)


class ReconstructionSettings(Protocol):
    """What a reconstruction needs (the flow's parameter model has these fields)."""

    @property
    def iterations(self) -> int: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def alpha(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def probe_update_start(self) -> int: ...
    @property
    def probe_modes(self) -> int: ...
    @property
    def subpixel_positions(self) -> bool: ...
    @property
    def iterations_per_checkpoint(self) -> int: ...
    @property
    def frames_per_chunk(self) -> int: ...


def scan_signature(scan_file: str) -> str:
    """Name, size and mtime: a rewritten scan never resumes an old checkpoint."""
    path = Path(scan_file)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def checkpoint_key(settings: ReconstructionSettings, scan_file: str, probe_file: str | None) -> str:
    """What a checkpoint must match to be resumed from (see the module docstring)."""
    shaping = {
        "algorithm": settings.algorithm,
        "alpha": settings.alpha,
        "beta": settings.beta,
        "probe_update_start": settings.probe_update_start,
    }
    # Only when not the default, so checkpoints written before these existed still match.
    if settings.probe_modes != 1:
        shaping["probe_modes"] = settings.probe_modes
    if settings.subpixel_positions:
        shaping["subpixel_positions"] = True
    text = json.dumps([scan_signature(scan_file), probe_file, shaping], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_amplitudes(
    scan: PtychoScan, frames_per_chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(√I in FFT order, valid mask in FFT order, mean amplitude), read chunk by chunk.

    ePIE visits every pattern every iteration, so the amplitudes are held in memory
    (float32); the raw frames never are.
    """
    amplitudes = np.empty((scan.n_positions, *scan.pattern_shape), dtype=np.float32)
    for start, frames in scan.iter_chunks(frames_per_chunk):
        np.maximum(frames, 0.0, out=frames)
        amplitudes[start : start + len(frames)] = detector_to_fft_order(np.sqrt(frames))
    valid = detector_to_fft_order(scan.valid)
    amplitudes[:, ~valid] = 0.0
    return amplitudes, valid, amplitudes.mean(axis=0)


def starting_probe(
    probe_file: str | None,
    pattern_shape: tuple[int, int],
    mean_amplitude: np.ndarray,
    valid: np.ndarray,
    modes: int = 1,
) -> np.ndarray:
    """The probe of an earlier run, or one estimated from the mean pattern; with several
    `modes`, the earlier run's modes when it had as many, else modes made from its probe."""
    if probe_file is None:
        probe = initial_probe(mean_amplitude, valid)
        return probe if modes == 1 else initial_probe_modes(probe, modes)
    saved = read_reconstruction(Path(probe_file))
    probe = saved.probe
    if probe.shape != pattern_shape:
        raise DataFileError(
            f"{probe_file}: /entry/reconstruction/probe has shape {probe.shape}, the scan's "
            f"patterns are {pattern_shape}"
        )
    if modes == 1:
        return probe
    if saved.probe_modes is not None and saved.probe_modes.shape == (modes, *pattern_shape):
        return saved.probe_modes
    return initial_probe_modes(probe, modes)


def reconstruct_scan(
    scan_file: str,
    results_dir: Path,
    settings: ReconstructionSettings,
    probe_file: str | None = None,
    on_block: Callable[[Reconstruction], None] | None = None,
    n_threads: int = 1,
) -> PtychoResult:
    """Read the scan, start from the checkpoint (or a fresh guess), iterate, write results.

    Every `iterations_per_checkpoint` iterations `checkpoint.h5` is replaced atomically,
    then `on_block` runs (progress reports; tests raise there to simulate a crash).
    `n_threads` is where the FFTs and kernels run, not part of any key.
    """
    key = checkpoint_key(settings, scan_file, probe_file)
    with PtychoScan(scan_file) as scan:
        geometry = scan.geometry
        pattern_shape = scan.pattern_shape
        positions, object_shape = positions_in_pixels(
            scan.positions_m, geometry.object_pixel_m, pattern_shape, settings.subpixel_positions
        )
        amplitudes, valid, mean_amplitude = load_amplitudes(scan, settings.frames_per_chunk)
    saved = read_checkpoint(results_dir, key)
    modes = settings.probe_modes
    if saved is not None and saved.obj.shape == object_shape and saved.probe.shape == pattern_shape:
        probe = saved.probe if modes == 1 else saved.probe_modes
        if probe is None or (modes > 1 and probe.shape != (modes, *pattern_shape)):
            probe = initial_probe_modes(saved.probe, modes)
        state = Reconstruction(saved.obj, probe, saved.iteration, list(saved.errors))
    else:
        probe = starting_probe(probe_file, pattern_shape, mean_amplitude, valid, modes)
        state = Reconstruction(initial_object(object_shape), probe)
    resumed_from = state.iteration
    pixel_m = float(np.mean(geometry.object_pixel_m))

    def checkpoint(current: Reconstruction) -> None:
        write_reconstruction(
            results_dir / CHECKPOINT_FILE, current.obj, current.probe, current.errors, key=key
        )
        if on_block is not None:
            on_block(current)

    run_iterations(
        state,
        amplitudes,
        valid,
        positions,
        settings.iterations,
        algorithm=settings.algorithm,
        alpha=settings.alpha,
        beta=settings.beta,
        probe_update_start=settings.probe_update_start,
        n_threads=n_threads,
        every=settings.iterations_per_checkpoint,
        on_block=checkpoint,
    )
    output = write_reconstruction(
        results_dir / RECONSTRUCTION_FILE,
        state.obj,
        state.probe,
        state.errors,
        key=key,
        positions_px=positions,
        pixel_size_m=(float(geometry.object_pixel_m[0]), float(geometry.object_pixel_m[1])),
        attributes={
            "algorithm": settings.algorithm,
            "object_pixel_size_m": pixel_m,
            "scan_file": scan_file,
        },
    )
    return PtychoResult(
        algorithm=settings.algorithm,
        iterations=state.iteration,
        n_positions=len(positions),
        final_error=state.errors[-1] if state.errors else float("nan"),
        object_pixel_m=pixel_m,
        reconstruction_file=str(output),
        first_error=state.errors[0] if state.errors else float("nan"),
        resumed_from_iteration=resumed_from,
        pattern_shape=pattern_shape,
        object_shape=object_shape,
    )
