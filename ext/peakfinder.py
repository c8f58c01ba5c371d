"""Hit finding on serial-crystallography frames: peakfinder8's method, Cython, GIL released.

The public face of the `_peakfinder` kernel. A `RingMap` (once per detector geometry and
mask) says which resolution ring every pixel lies on; `find_peaks` takes one frame or a
chunk of frames and returns their peak tables in the (frame, peak) layout that CXI files
and CrystFEL use. The method, as Cheetah/OM's peakfinder8 and CrystFEL's
`--peaks=peakfinder8`:

- per ring of 1 pixel width around the beam, the mean and sigma of the valid pixels,
  `n_iterations` times clipped to the pixels below the ring's threshold
  max(mean + min_snr·sigma, adc_threshold);
- peaks are 8-connected pixels above their ring's threshold, from `min_pix` to `max_pix`
  pixels, whose brightest pixel is the largest valid count within `local_max_radius`,
  between rings `min_res_px` and `max_res_px` (the resolution limits, in pixels);
- intensity is the sum of (count − ring mean), position its weighted centroid in pixel
  index coordinates (centre of pixel (0, 0) at (0, 0), as CXI's peakXPosRaw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefect_beamline.ext._peakfinder import find_peaks_kernel
from prefect_beamline.ext.arguments import (
    kernel_threads,
    require_array,
    require_integer,
    require_number,
    require_shape,
)

SUPPORTED_DTYPES = (np.uint16, np.uint32, np.int32)
BLOCK = 256  # as _peakfinder.pyx's BLOCK: pixels of a row per block maximum
NO_RING = 0xFFFF  # as _peakfinder.pyx: ring of a masked pixel


def overflow_value(dtype: np.dtype) -> int:
    """The count an Eiger writes for an invalid pixel (2ⁿ−1); it and above are ignored."""
    return int(np.iinfo(dtype).max)


@dataclass(frozen=True)
class PeakFinderParameters:
    """peakfinder8's settings (names as in CrystFEL's indexamajig --peaks=peakfinder8)."""

    min_snr: float = 6.0
    adc_threshold: float = 2.0
    n_iterations: int = 5
    min_pix: int = 2
    max_pix: int = 200
    local_max_radius: int = 2
    min_res_px: int = 10
    max_res_px: int = 100_000
    max_peaks: int = 2048

    def __post_init__(self) -> None:
        require_number("min_snr", self.min_snr, at_least=0.0)
        require_number("adc_threshold", self.adc_threshold, at_least=0.0)
        require_integer("n_iterations", self.n_iterations, minimum=1)
        require_integer("min_pix", self.min_pix, minimum=1)
        require_integer("max_pix", self.max_pix, minimum=self.min_pix)
        require_integer("local_max_radius", self.local_max_radius, minimum=0)
        require_integer("min_res_px", self.min_res_px, minimum=0)
        require_integer("max_res_px", self.max_res_px, minimum=self.min_res_px)
        require_integer("max_peaks", self.max_peaks, minimum=1)


@dataclass(frozen=True)
class RingMap:
    """Ring (floor of the distance in pixels from the beam) of every valid pixel.

    `rings` is uint16 (NO_RING where masked); `block_lo`/`block_hi` the smallest and
    largest ring of the valid pixels of each BLOCK-pixel piece of a row (lo > hi when it
    has none), which lets the kernel skip pieces no count can pass.
    """

    rings: np.ndarray
    n_rings: int
    block_lo: np.ndarray
    block_hi: np.ndarray

    @classmethod
    def from_geometry(
        cls, valid: np.ndarray, beam_centre_x_px: float, beam_centre_y_px: float
    ) -> RingMap:
        """The map for a mask (True = valid) and a beam centre in pixels (pixel centres
        at +0.5, as NXmx's beam_center_x/y)."""
        require_array("valid", valid, ndim=2, axes="(ny, nx)", dtypes=(np.bool_,))
        beam_x = require_number("beam_centre_x_px", beam_centre_x_px)
        beam_y = require_number("beam_centre_y_px", beam_centre_y_px)
        ny, nx = valid.shape
        rows = (np.arange(ny, dtype=np.float64) + 0.5 - beam_y)[:, None]
        columns = (np.arange(nx, dtype=np.float64) + 0.5 - beam_x)[None, :]
        radius = np.floor(np.hypot(rows, columns))
        n_rings = int(radius.max()) + 1
        if n_rings >= NO_RING:
            raise ValueError(f"detector too large: {n_rings} rings, at most {NO_RING - 1}")
        rings = np.where(valid, radius, NO_RING).astype(np.uint16)
        padded = -(-nx // BLOCK) * BLOCK
        low = np.full((ny, padded), NO_RING, dtype=np.int64)
        high = np.full((ny, padded), -1, dtype=np.int64)
        low[:, :nx] = rings
        high[:, :nx] = np.where(valid, radius, -1)
        block_lo = low.reshape(ny, -1, BLOCK).min(axis=2).ravel()
        block_hi = high.reshape(ny, -1, BLOCK).max(axis=2).ravel()
        return cls(rings, n_rings, block_lo, block_hi)


@dataclass(frozen=True)
class PeakTable:
    """Peaks of a chunk of frames, (frame, peak) arrays as CXI stores them.

    `n_peaks[i]` peaks were found on frame i; the first min(n_peaks[i], max_peaks) are
    in row i of `x`, `y` (pixels, index coordinates), `intensity` (counts above the ring
    background) and `n_pixels`; the rest of each row is zero.
    """

    n_peaks: np.ndarray
    x: np.ndarray
    y: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray

    def stored(self, frame: int) -> int:
        return int(min(self.n_peaks[frame], self.x.shape[1]))

    def peaks(self, frame: int) -> np.ndarray:
        """(n, 4) array of x, y, intensity, n_pixels of one frame's stored peaks."""
        n = self.stored(frame)
        columns = (self.x[frame, :n], self.y[frame, :n], self.intensity[frame, :n])
        return np.column_stack([*columns, self.n_pixels[frame, :n].astype(np.float64)])


def find_peaks(
    frames: np.ndarray,
    ring_map: RingMap,
    params: PeakFinderParameters = PeakFinderParameters(),
    *,
    n_threads: int | None = 1,
) -> PeakTable:
    """Peaks of one frame (ny, nx) or a chunk (n, ny, nx) of uint16, uint32 or int32 counts.

    Frames of a chunk run in parallel on `n_threads` (None or 0: every core). Pixels
    holding the dtype's largest value (the Eiger's mark of an invalid pixel) or a
    negative count are ignored, as masked ones are.
    """
    require_array("frames", frames, ndim=(2, 3), axes="([n,] ny, nx)", dtypes=SUPPORTED_DTYPES)
    if not isinstance(params, PeakFinderParameters):
        raise TypeError(f"params must be PeakFinderParameters, got {type(params).__name__}")
    chunk = np.ascontiguousarray(frames[None] if frames.ndim == 2 else frames)
    require_shape("frames", chunk[0], ring_map.rings.shape, source="the ring map's")
    n = chunk.shape[0]
    shape = (n, params.max_peaks)
    table = PeakTable(
        n_peaks=np.zeros(n, dtype=np.int64),
        x=np.zeros(shape),
        y=np.zeros(shape),
        intensity=np.zeros(shape),
        n_pixels=np.zeros(shape, dtype=np.int32),
    )
    find_peaks_kernel(
        chunk,
        ring_map.rings,
        ring_map.n_rings,
        ring_map.block_lo,
        ring_map.block_hi,
        float(params.min_snr),
        float(params.adc_threshold),
        int(params.n_iterations),
        int(params.min_pix),
        int(params.max_pix),
        int(params.local_max_radius),
        int(params.min_res_px),
        int(params.max_res_px),
        overflow_value(chunk.dtype),
        table.x,
        table.y,
        table.intensity,
        table.n_pixels,
        table.n_peaks,
        kernel_threads(n_threads),
    )
    if (table.n_peaks < 0).any():
        raise MemoryError("peak finder: out of memory for its workspace")
    return table
