"""Where live results go as they happen: the gateway's results stream and the LIMS.

Each sink takes results on the analysis threads and does its I/O on its own thread in
batches (every `interval_s`), so a slow LIMS or gateway never slows the kernels; what
is waiting is bounded only by the collection's size (one small record per image).
A failed batch is retried (infrastructure failures retry) and never dropped silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Generic, TypeVar

import httpx

from prefect_beamline.gateway.live_results import LIVE_PREFIX
from prefect_beamline.lims import Lims
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.analysis import GridResult, ImageQuality

logger = logging.getLogger("prefect_beamline.live")
Row = TypeVar("Row")


class BatchingSink:
    """Collects items and hands them to `write` in batches on a background thread."""

    def __init__(
        self,
        write: Callable[[list[Any]], None],
        *,
        interval_s: float = 0.05,
        name: str,
        max_batch_bytes: int | None = None,
    ) -> None:
        """`max_batch_bytes`: items are `bytes` and a batch holds at most this many of
        their bytes (an item larger than that goes alone)."""
        self._write = write
        self.interval_s = interval_s
        self.max_batch_bytes = max_batch_bytes
        self._pending: list[Any] = []
        self._lock = threading.Condition()
        self._closing = False
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        with self._lock:
            self._pending.append(item)
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                if not self._pending and self._closing:
                    return
                batch = self._take()
            self._flush(batch)
            time.sleep(self.interval_s)

    def _take(self) -> list[Any]:
        """The next batch off the front of what is pending (the lock is held)."""
        if self.max_batch_bytes is None:
            batch, self._pending = self._pending, []
            return batch
        size = end = 0
        while end < len(self._pending) and (
            end == 0 or size + len(self._pending[end]) <= self.max_batch_bytes
        ):
            size += len(self._pending[end])
            end += 1
        batch, self._pending = self._pending[:end], self._pending[end:]
        return batch

    def _flush(self, batch: list[Any]) -> None:
        delay = 0.1
        while True:
            try:
                self._write(batch)
                self.written += len(batch)
                return
            except Exception as error:
                self.failures += 1
                logger.warning(
                    "%s: batch of %d failed, retrying: %r", self._thread.name, len(batch), error
                )
                if self._closing and self.failures > 20:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        """Write what is pending, then stop."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()


# The most message bytes in one POST: a backlog (the gateway was away a while) goes out
# in several, each well under the gateway's body limit (1 MiB by default).
MAX_POST_BYTES = 256 * 1024


class ResultsStreamPublisher:
    """POSTs results to the gateway's live results stream of one collection."""

    def __init__(
        self,
        gateway_url: str,
        collection_id: int,
        token: str | None,
        *,
        interval_s: float = 0.02,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=gateway_url, headers=headers, timeout=10.0, transport=transport
        )
        self._path = f"{LIVE_PREFIX}/{collection_id}/results"
        self._sink = BatchingSink(
            self._post,
            interval_s=interval_s,
            name=f"results-{collection_id}",
            max_batch_bytes=MAX_POST_BYTES,
        )

    def _post(self, encoded: list[bytes]) -> None:
        body = b"[" + b",".join(encoded) + b"]"
        response = self._client.post(
            self._path, content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code in (401, 403, 413, 422):
            raise PermissionError(
                f"gateway refused results: {response.status_code} {response.text}"
            )
        response.raise_for_status()

    def publish(self, message: dict[str, Any]) -> None:
        self._sink.put(json.dumps(message, separators=(",", ":")).encode())

    def close(self) -> None:
        self._sink.close()
        self._client.close()


class LimsRowsWriter(Generic[Row]):
    """One program's result rows, written in batches off the analysis threads by
    `record(lims, program_id, data_collection_id, rows)` (one transaction a second by
    default: a transaction costs milliseconds of CPU, so per-frame writes would cost more
    than the analysis at detector rates)."""

    def __init__(
        self,
        record: Callable[[Lims, int, int, list[Row]], None],
        lims: Lims,
        program_id: int,
        data_collection_id: int,
        *,
        interval_s: float = 1.0,
        name: str,
    ) -> None:
        self.lims = lims
        self.program_id = program_id
        self.data_collection_id = data_collection_id
        self._record = record
        self._sink = BatchingSink(self._write, interval_s=interval_s, name=name)

    def _write(self, rows: list[Row]) -> None:
        self._record(self.lims, self.program_id, self.data_collection_id, rows)

    def add(self, row: Row) -> None:
        self._sink.put(row)

    def close(self) -> None:
        self._sink.close()


class LimsResultsWriter(LimsRowsWriter[ImageQuality]):
    """ImageQualityIndicators rows of one program as results come, and the grid result."""

    def __init__(
        self, lims: Lims, program_id: int, data_collection_id: int, *, interval_s: float = 1.0
    ) -> None:
        super().__init__(
            records.record_image_quality,
            lims,
            program_id,
            data_collection_id,
            interval_s=interval_s,
            name=f"lims-{program_id}",
        )

    def record_centre(self, result: GridResult) -> None:
        records.record_grid_result(self.lims, self.program_id, self.data_collection_id, result)


def centre_message(result: GridResult | None, after_last_frame_s: float) -> dict[str, Any]:
    """The `centre` message: the GridResult's fields (None: no diffraction found)."""
    return {
        "type": "centre",
        "centre": asdict(result) if result is not None else None,
        "after_last_frame_s": round(after_last_frame_s, 4),
    }
