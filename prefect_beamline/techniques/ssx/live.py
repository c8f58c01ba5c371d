"""Serial crystallography live: peaks per frame and the hit rate per chunk while the
detector runs, fed by the same three inputs as live MX (`prefect_beamline.live.inputs`).

A `SerialLiveSession` takes raw frames as they arrive and analyses them on one worker
thread, `n_threads` frames at a time (the kernels run those frames in parallel, GIL
released), with the offline flow's kernels and settings. Each frame's peak count goes
to the results stream as soon as it is known; when every frame of a chunk of
`frames_per_chunk` image numbers is in (or failed), the chunk's hit rate and mean
radial profile go to the stream and its `SSXChunkHitRate` row to the LIMS. Frames are
never held beyond the batch being analysed: a chunk keeps only per-frame numbers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from prefect_beamline.ext.peakfinder import find_peaks
from prefect_beamline.formats.raw_chunks import RawFrame
from prefect_beamline.lims import Lims
from prefect_beamline.live.sinks import LimsRowsWriter
from prefect_beamline.techniques.ssx import records
from prefect_beamline.techniques.ssx.analysis import ChunkHitRate, SerialAnalyser

logger = logging.getLogger("prefect_beamline.live")


class Publisher(Protocol):
    """Where messages go (the gateway's results stream: `ResultsStreamPublisher`)."""

    def publish(self, message: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ChunkRateWriter(LimsRowsWriter[ChunkHitRate]):
    """SSXChunkHitRate rows of one program, written in batches off the analysis thread."""

    def __init__(
        self, lims: Lims, program_id: int, data_collection_id: int, *, interval_s: float = 1.0
    ) -> None:
        super().__init__(
            records.record_chunk_hit_rates,
            lims,
            program_id,
            data_collection_id,
            interval_s=interval_s,
            name=f"lims-ssx-{program_id}",
        )


@dataclass
class _Window:
    """What a chunk of image numbers has gathered so far."""

    first: int
    last: int
    n_peaks: dict[int, int] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    profile_sum: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return len(self.n_peaks) + len(self.failed) == self.last - self.first + 1


@dataclass
class SerialLiveSummary:
    """What a finished session saw: peaks by image, failures, each chunk's hit rate."""

    n_peaks: dict[int, int]
    failed: list[int]
    chunks: list[ChunkHitRate]
    lags_s: list[float]


class SerialLiveSession:
    """Analyse the `n_images` frames of one serial collection as they are submitted.

    `submit` blocks while `max_backlog` frames wait (back-pressure, no frame dropped).
    """

    def __init__(
        self,
        analyser: SerialAnalyser,
        *,
        n_images: int,
        first_image: int = 1,
        frames_per_chunk: int = 100,
        publisher: Publisher | None = None,
        lims_writer: ChunkRateWriter | None = None,
        n_threads: int = 1,
        max_backlog: int = 32,
    ) -> None:
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be at least 1, got {frames_per_chunk}")
        self.analyser = analyser
        self.n_images = n_images
        self.first_image = first_image
        self.frames_per_chunk = frames_per_chunk
        self.publisher = publisher
        self.lims_writer = lims_writer
        self.n_threads = max(1, n_threads)
        self._queue: queue.Queue[tuple[RawFrame, float] | None] = queue.Queue(max_backlog)
        self._windows: dict[int, _Window] = {}
        self._chunks: list[ChunkHitRate] = []
        self._n_peaks: dict[int, int] = {}
        self._failed: list[int] = []
        self._lags: list[float] = []
        self._buffer: np.ndarray | None = None
        radial = analyser.integrator.radial
        step = float(radial[1] - radial[0]) if radial.size > 1 else 0.0
        # Bins are uniform in the unit: the axis as (first centre, step), not 1000 numbers
        # in every message (the gateway caps a batch of messages at 1 MB).
        self._radial_axis = (float(radial[0]), step)
        self._worker = threading.Thread(target=self._work, name="ssx-live", daemon=True)
        self._worker.start()

    def submit(self, raw: RawFrame, available_at: float | None = None) -> None:
        """One frame to analyse (blocks while the backlog is full)."""
        if not self.first_image <= raw.image_number < self.first_image + self.n_images:
            raise ValueError(
                f"{raw.where}: image {raw.image_number} outside the collection's "
                f"{self.first_image}..{self.first_image + self.n_images - 1}"
            )
        self._queue.put((raw, time.time() if available_at is None else available_at))

    def _publish(self, message: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish(message)

    def _work(self) -> None:
        """Take up to `n_threads` queued frames at a time; analyse them together."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.n_threads:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._analyse(batch)
                    return
                batch.append(more)
            self._analyse(batch)

    def _decode(self, batch: list[tuple[RawFrame, float]]) -> tuple[np.ndarray, list[int]]:
        """The batch's frames stacked (one reused buffer); indices of those decoded."""
        first = batch[0][0]
        shape = (self.n_threads, *first.shape)
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != first.dtype:
            self._buffer = np.empty(shape, dtype=first.dtype)
        decoded: list[int] = []
        for raw, _ in batch:
            if raw.shape != first.shape or raw.dtype != first.dtype:
                self._fail(
                    raw.image_number,
                    ValueError(
                        f"{raw.where}: frame {raw.shape} {raw.dtype}, the collection's "
                        f"first frame {first.shape} {first.dtype}"
                    ),
                )
                continue
            try:
                raw.decode(out=self._buffer[len(decoded)], n_threads=self.n_threads)
            except Exception as error:
                self._fail(raw.image_number, error)
                continue
            decoded.append(raw.image_number)
        return self._buffer[: len(decoded)], decoded

    def _analyse(self, batch: list[tuple[RawFrame, float]]) -> None:
        available = {raw.image_number: at for raw, at in batch}
        try:
            frames, numbers = self._decode(batch)
            if not numbers:
                return
            table = find_peaks(
                frames,
                self.analyser.ring_map,
                self.analyser.settings.peaks,
                n_threads=self.n_threads,
            )
            profiles = self.analyser.integrator.integrate(frames, n_threads=self.n_threads)
        except Exception as error:  # a kernel failure fails the batch's frames, loudly
            for raw, _ in batch:
                if raw.image_number not in self._failed:
                    self._fail(raw.image_number, error)
            return
        backlog = self._queue.qsize()
        for index, number in enumerate(numbers):
            n_peaks = int(table.n_peaks[index])
            lag = time.time() - available[number]
            self._lags.append(lag)
            self._n_peaks[number] = n_peaks
            self._publish(
                {
                    "type": "image",
                    "image_number": number,
                    "n_peaks": n_peaks,
                    "hit": n_peaks >= self.analyser.settings.min_peaks,
                    "backlog_images": backlog,
                    "lag_s": round(lag, 4),
                }
            )
            window = self._window(number)
            window.n_peaks[number] = n_peaks
            profile = profiles.intensity[index]
            if window.profile_sum is None:
                window.profile_sum = profile.copy()
            else:
                window.profile_sum += profile
            self._close_if_complete(window)

    def _window(self, number: int) -> _Window:
        index = (number - self.first_image) // self.frames_per_chunk
        window = self._windows.get(index)
        if window is None:
            first = self.first_image + index * self.frames_per_chunk
            last = min(first + self.frames_per_chunk, self.first_image + self.n_images) - 1
            window = self._windows[index] = _Window(first, last)
        return window

    def _fail(self, number: int, error: BaseException) -> None:
        logger.error("live analysis of image %d failed: %s", number, error)
        self._failed.append(number)
        self._publish({"type": "status", "failed_image": number, "error": str(error)[:500]})
        window = self._window(number)
        window.failed.add(number)
        self._close_if_complete(window)

    def _close_if_complete(self, window: _Window, *, partial: bool = False) -> None:
        """A finished chunk's hit rate to the stream and the LIMS (once)."""
        if not (window.complete or partial) or not window.n_peaks:
            return
        self._windows.pop((window.first - self.first_image) // self.frames_per_chunk, None)
        counts = np.array([window.n_peaks[n] for n in sorted(window.n_peaks)], dtype=np.int64)
        hits = counts[counts >= self.analyser.settings.min_peaks]
        chunk = ChunkHitRate(
            first_image=window.first,
            last_image=window.last,
            n_frames=int(counts.size),
            n_hits=int(hits.size),
            hit_rate=round(hits.size / counts.size, 6),
            mean_peaks_per_hit=float(hits.mean()) if hits.size else None,
            finished_at=time.time(),
        )
        self._chunks.append(chunk)
        if self.lims_writer is not None:
            self.lims_writer.add(chunk)
        assert window.profile_sum is not None
        mean_profile = window.profile_sum / counts.size
        self._publish(
            {
                "type": "hit_rate",
                "first_image": chunk.first_image,
                "last_image": chunk.last_image,
                "n_frames": chunk.n_frames,
                "n_hits": chunk.n_hits,
                "hit_rate": chunk.hit_rate,
                "mean_peaks_per_hit": chunk.mean_peaks_per_hit,
                "failed_images": sorted(window.failed),
                "unit": self.analyser.integrator.unit,
                "radial_first": self._radial_axis[0],
                "radial_step": self._radial_axis[1],
                "mean_profile": [float(f"{value:.5g}") for value in mean_profile],
            }
        )

    def finish(self) -> SerialLiveSummary:
        """Wait for every submitted frame, report chunks left incomplete, close sinks."""
        self._queue.put(None)
        self._worker.join()
        for window in list(self._windows.values()):
            self._close_if_complete(window, partial=True)
        if self.lims_writer is not None:
            self.lims_writer.close()
        missing = self.n_images - len(self._n_peaks) - len(self._failed)
        self._publish({"type": "end", "n_results": len(self._n_peaks), "missing_images": missing})
        if self.publisher is not None:
            self.publisher.close()
        return SerialLiveSummary(
            n_peaks=dict(self._n_peaks),
            failed=sorted(self._failed),
            chunks=sorted(self._chunks, key=lambda chunk: chunk.first_image),
            lags_s=list(self._lags),
        )
