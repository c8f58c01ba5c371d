"""A movie's frames handed to the binning and shifted-sum kernels a few at a time.

The kernels finish each block of their output for every frame of a call before the
next block, so the gain reference and the output are read from memory once per call
instead of once per frame, while each frame streams past once. Frames come from any
reader with `n_frames`, `shape` and `frame(index)` (MRC, TIFF, EER): the reader decides
how a frame is read, this module only how many are handed over together.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from prefect_beamline.ext.motioncor import gain_bin_frames, shift_accumulate_frames

# Frames per kernel call: 8 int8 4k frames are 134 MB (memory-mapped MRC: no copy at all).
FRAMES_PER_PASS = 8


class FrameSource(Protocol):
    """What the kernels need of a movie reader."""

    @property
    def n_frames(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    def frame(self, index: int) -> np.ndarray: ...


def binned_frames(
    reader: FrameSource, gain: np.ndarray | None, binning: int, threads: int
) -> np.ndarray:
    """Every frame gain-corrected and binned by `binning` (n_frames, ny // b, nx // b)."""
    ny, nx = reader.shape
    binned = np.empty((reader.n_frames, ny // binning, nx // binning), dtype=np.float32)
    for start in range(0, reader.n_frames, FRAMES_PER_PASS):
        stop = min(start + FRAMES_PER_PASS, reader.n_frames)
        frames = [reader.frame(f) for f in range(start, stop)]
        gain_bin_frames(frames, gain, binning, out=binned[start:stop], n_threads=threads)
    return binned


def add_shifted(
    reader: FrameSource,
    frames: range,
    gain: np.ndarray | None,
    coefficients: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None:
    """Add `frames` (e.g. a dose group), each gain-corrected and shifted by its motion
    field (`coefficients[f]`, (2, 6) per frame: `MotionModel.coefficients`), to `out`."""
    for start in range(frames.start, frames.stop, FRAMES_PER_PASS):
        stop = min(start + FRAMES_PER_PASS, frames.stop)
        shift_accumulate_frames(
            [reader.frame(f) for f in range(start, stop)],
            gain,
            coefficients[start:stop],
            out,
            threads,
        )
