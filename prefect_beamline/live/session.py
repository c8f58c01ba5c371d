"""One collection's live analysis: frames in, each result out as soon as it is ready.

A `LiveSession` runs `LiveAnalysis` and sends every image's result to its sinks (the
gateway's results stream, the LIMS, every `on_result` hook: the live plot) from the
analysis threads. For a grid scan, the
result that completes the grid computes the X-ray centre at once, on that thread, and
publishes it to the stream, the LIMS and every `on_centre` hook (the facility bridge
registers its RabbitMQ publisher there, in dodal's `ZocaloResults` shape).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from prefect_beamline.events import GridScan
from prefect_beamline.formats.raw_chunks import RawFrame
from prefect_beamline.live.analysis import FrameAnalyser, LiveAnalysis, LiveResult
from prefect_beamline.live.sinks import LimsResultsWriter, ResultsStreamPublisher, centre_message
from prefect_beamline.techniques.mx.analysis import GridResult, ImageQuality, find_grid_centre

logger = logging.getLogger("prefect_beamline.live")
CentreHook = Callable[[GridResult | None, Sequence[ImageQuality]], None]
ResultHook = Callable[[ImageQuality], None]


@dataclass
class LiveSummary:
    """What a finished session saw: results by image, failures, the centre, timings."""

    results: dict[int, ImageQuality]
    failed: list[int]
    centre: GridResult | None
    centre_after_last_frame_s: float | None
    lags_s: list[float] = field(default_factory=list)
    blocked_s: float = 0.0

    def images(self) -> list[ImageQuality]:
        return [self.results[number] for number in sorted(self.results)]


class LiveSession:
    """Analyse the `n_images` frames of one collection as they are submitted."""

    def __init__(
        self,
        analyser: FrameAnalyser,
        *,
        n_images: int,
        first_image: int = 1,
        grid: GridScan | None = None,
        publisher: ResultsStreamPublisher | None = None,
        lims_writer: LimsResultsWriter | None = None,
        on_centre: Sequence[CentreHook] = (),
        on_result: Sequence[ResultHook] = (),
        n_workers: int = 1,
        max_backlog: int = 32,
    ) -> None:
        self.n_images = n_images
        self.first_image = first_image
        self.grid = grid
        self.publisher = publisher
        self.lims_writer = lims_writer
        self.on_centre = list(on_centre)
        self.on_result = list(on_result)
        self._lock = threading.Lock()
        self._results: dict[int, ImageQuality] = {}
        self._failed: list[int] = []
        self._lags: list[float] = []
        self._last_available = 0.0
        self._centre: GridResult | None = None
        self._centre_after: float | None = None
        self._complete = threading.Event()
        self.analysis = LiveAnalysis(
            analyser,
            self._on_result,
            n_workers=n_workers,
            max_backlog=max_backlog,
            on_error=self._on_error,
        )

    def submit(self, raw: RawFrame, available_at: float | None = None) -> None:
        """One frame to analyse (blocks while the backlog is full)."""
        if not self.first_image <= raw.image_number < self.first_image + self.n_images:
            raise ValueError(
                f"{raw.where}: image {raw.image_number} outside the collection's "
                f"{self.first_image}..{self.first_image + self.n_images - 1}"
            )
        self.analysis.submit(raw, available_at)

    def _on_result(self, result: LiveResult) -> None:
        if self.lims_writer is not None:
            self.lims_writer.add(result.quality)
        if self.publisher is not None:
            self.publisher.publish(result.as_message())
        for hook in self.on_result:
            try:
                hook(result.quality)
            except Exception:  # a hook (the live plot) must not lose the image's result
                logger.exception("on_result hook %r failed", hook)
        with self._lock:
            self._results[result.quality.image_number] = result.quality
            self._lags.append(result.lag_s)
            self._last_available = max(self._last_available, result.available_at)
        self._maybe_complete()

    def _on_error(self, image_number: int, error: BaseException) -> None:
        logger.error("live analysis of image %d failed: %s", image_number, error)
        if self.publisher is not None:
            self.publisher.publish(
                {"type": "status", "failed_image": image_number, "error": str(error)[:500]}
            )
        with self._lock:
            self._failed.append(image_number)
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        with self._lock:
            if self._complete.is_set() or len(self._results) + len(self._failed) < self.n_images:
                return
            images = [self._results[number] for number in sorted(self._results)]
            failed = sorted(self._failed)
            last_available = self._last_available
            self._complete.set()
        if self.grid is not None:
            self._publish_centre(images, failed, last_available)

    def _publish_centre(
        self, images: list[ImageQuality], failed: list[int], last_available: float
    ) -> None:
        """The X-ray centre from every image's spot count (a failed image counts 0)."""
        assert self.grid is not None
        counts = np.zeros(self.n_images, dtype=np.int64)
        for image in images:
            counts[image.image_number - self.first_image] = image.n_spots
        centre = find_grid_centre(self.grid, counts, first_image_number=self.first_image)
        self._centre = centre
        self._centre_after = time.time() - last_available
        message = centre_message(centre, self._centre_after)
        if failed:
            message["missing_images"] = failed
        if self.publisher is not None:
            self.publisher.publish(message)
        if self.lims_writer is not None and centre is not None:
            self.lims_writer.record_centre(centre)
        for hook in self.on_centre:
            try:
                hook(centre, images)
            except Exception:  # a facility hook must not stop the others
                logger.exception("on_centre hook %r failed", hook)

    def finish(self) -> LiveSummary:
        """Wait for every submitted frame, flush the sinks, end the results stream."""
        self.analysis.close()
        if self.lims_writer is not None:
            self.lims_writer.close()
        if self.publisher is not None:
            missing = self.n_images - len(self._results) - len(self._failed)
            self.publisher.publish(
                {"type": "end", "n_results": len(self._results), "missing_images": missing}
            )
            self.publisher.close()
        with self._lock:
            return LiveSummary(
                results=dict(self._results),
                failed=sorted(self._failed),
                centre=self._centre,
                centre_after_last_frame_s=self._centre_after,
                lags_s=list(self._lags),
                blocked_s=self.analysis.blocked_s,
            )
