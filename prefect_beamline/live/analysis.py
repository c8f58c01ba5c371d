"""Per-image MX analysis of frames as they arrive: warm state, bounded backlog, threads.

A `FrameAnalyser` holds what every frame of a running collection shares (geometry,
mask, spot-finding settings) and its buffers per thread, so a frame costs its
decompression and spot finding and nothing else; for integer frames the two are fused
(`find_spots_bslz4`: rows thresholded as they are decoded, still in cache).
`LiveAnalysis` runs it on worker threads behind a bounded queue: decompression and spot
finding release the GIL, so the threads run on separate cores. When frames come faster
than the workers take them, `submit` blocks (the backlog stays bounded) and the wait is
counted, never a frame dropped; the backlog and the lag behind the newest frame are
visible on every result.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prefect_beamline import metrics
from prefect_beamline.ext.bslz4 import BitshuffleLZ4Error
from prefect_beamline.ext.spotfind import DispersionParameters, find_spots, find_spots_bslz4
from prefect_beamline.formats.nxmx import DetectorGeometry, NXmxError, max_valid_count
from prefect_beamline.formats.raw_chunks import RawFrame
from prefect_beamline.techniques.mx.analysis import ImageQuality, estimate_d_min

# Frames whose bitshuffle-LZ4 chunks are decoded and spot-found in one fused pass.
FUSED_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int32))


@dataclass(frozen=True)
class SpotSettings:
    """The spot finder's settings for one collection (MXParameters' science fields)."""

    dispersion: DispersionParameters = DispersionParameters()
    min_spot_size: int = 2
    max_spot_size: int = 1000


@dataclass(frozen=True)
class LiveResult:
    """One image's result as the results stream carries it, with its timing.

    `available_at` is when the frame was written or received (time.time()), `done_at`
    when its result was ready; `backlog` the images queued at that moment.
    """

    quality: ImageQuality
    available_at: float
    done_at: float
    backlog: int

    @property
    def lag_s(self) -> float:
        return self.done_at - self.available_at

    def as_message(self) -> dict[str, object]:
        return {
            "type": "image",
            "image_number": self.quality.image_number,
            "n_spots": self.quality.n_spots,
            "total_intensity": self.quality.total_intensity,
            "d_min_angstrom": self.quality.d_min_angstrom,
            "backlog_images": self.backlog,
            "lag_s": round(self.lag_s, 4),
        }


class FrameAnalyser:
    """Decode and spot-find one frame of the running collection (thread-safe)."""

    def __init__(
        self, geometry: DetectorGeometry, valid_pixels: np.ndarray, settings: SpotSettings
    ) -> None:
        if valid_pixels.shape != geometry.image_shape:
            raise ValueError(
                f"mask shape {valid_pixels.shape} differs from the detector's "
                f"{geometry.image_shape}"
            )
        self.geometry = geometry
        self.valid = np.ascontiguousarray(valid_pixels, dtype=bool)
        self.settings = settings
        self._local = threading.local()

    def _buffer(
        self, raw: RawFrame, name: str = "buffer", dtype: np.dtype | None = None
    ) -> np.ndarray:
        """This thread's buffer `name` of the frame's shape (and dtype, unless given)."""
        dtype = raw.dtype if dtype is None else dtype
        buffer = getattr(self._local, name, None)
        if buffer is None or buffer.shape != raw.shape or buffer.dtype != dtype:
            buffer = np.empty(raw.shape, dtype=dtype)
            setattr(self._local, name, buffer)
        return buffer

    def analyse(self, raw: RawFrame) -> ImageQuality:
        """Spot count, integrated intensity and resolution of one raw frame."""
        if raw.shape != self.geometry.image_shape:
            raise ValueError(
                f"{raw.where}: frame shape {raw.shape}, the collection's is "
                f"{self.geometry.image_shape}"
            )
        settings = self.settings
        # Overflowed pixels (2^n - 1) and counts above saturation are masked and counted,
        # as in the offline chunks: the finished run reuses these results.
        max_valid = max_valid_count(self.geometry.saturation_value, raw.dtype)
        if raw.compressed and raw.dtype in FUSED_DTYPES:
            # Decoding fused with the threshold: rows are thresholded as they are decoded.
            try:
                spots = find_spots_bslz4(
                    raw.chunk,
                    self.valid,
                    self._buffer(raw),
                    settings.dispersion,
                    max_valid=max_valid,
                    min_spot_size=settings.min_spot_size,
                    max_spot_size=settings.max_spot_size,
                    strong=self._buffer(raw, "strong", np.dtype(np.bool_)),
                    where=raw.where,
                )
            except BitshuffleLZ4Error as error:
                raise NXmxError(str(error)) from error
        else:
            spots = find_spots(
                raw.decode(out=self._buffer(raw), n_threads=1),
                self.valid,
                settings.dispersion,
                max_valid=max_valid,
                min_spot_size=settings.min_spot_size,
                max_spot_size=settings.max_spot_size,
                n_threads=1,
            )
        return ImageQuality(
            image_number=raw.image_number,
            n_spots=len(spots),
            total_intensity=float(spots.intensity.sum()),
            d_min_angstrom=estimate_d_min(self.geometry.resolution_angstrom(spots.x, spots.y)),
            n_overloads=spots.n_overloads,
        )


class LiveAnalysis:
    """Worker threads analysing submitted frames; results to `on_result` as they finish.

    `max_backlog` bounds the frames queued (raw chunks: ~5 MB each for 16 Mpixel);
    `submit` blocks while it is full. A frame whose analysis fails is reported to
    `on_error` with its image number (and counted), not silently skipped. `close()`
    waits for every submitted frame.
    """

    def __init__(
        self,
        analyser: FrameAnalyser,
        on_result: Callable[[LiveResult], None],
        *,
        n_workers: int = 1,
        max_backlog: int = 32,
        on_error: Callable[[int, BaseException], None] | None = None,
        technique: str = "mx",
    ) -> None:
        self.analyser = analyser
        self.on_result = on_result
        self.on_error = on_error
        self.technique = technique
        self._queue: queue.Queue[tuple[RawFrame, float] | None] = queue.Queue(max_backlog)
        self._lock = threading.Lock()
        self.submitted = 0
        self.done = 0
        self.failed: list[int] = []
        self.blocked_s = 0.0
        self._workers = [
            threading.Thread(target=self._work, name=f"live-analysis-{index}", daemon=True)
            for index in range(n_workers)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def backlog(self) -> int:
        """Frames submitted and not yet finished (queued or being analysed)."""
        return self.submitted - self.done

    def submit(self, raw: RawFrame, available_at: float | None = None) -> None:
        """Queue a frame; blocks while `max_backlog` frames wait (back-pressure)."""
        available_at = time.time() if available_at is None else available_at
        with self._lock:
            self.submitted += 1
        began = time.perf_counter()
        self._queue.put((raw, available_at))
        waited = time.perf_counter() - began
        if waited > 1e-3:
            self.blocked_s += waited
        metrics.set_live_backlog(self.technique, self.backlog)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            raw, available_at = item
            try:
                quality = self.analyser.analyse(raw)
            except Exception as error:
                with self._lock:
                    self.done += 1
                    self.failed.append(raw.image_number)
                if self.on_error is not None:
                    self.on_error(raw.image_number, error)
                continue
            with self._lock:
                self.done += 1
                backlog = self.submitted - self.done
            result = LiveResult(quality, available_at, time.time(), backlog)
            metrics.observe_live_result(self.technique, result.lag_s, backlog)
            self.on_result(result)

    def close(self) -> None:
        """Wait for every submitted frame, then stop the workers."""
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
