"""Getting outbox events to Prefect: `PrefectEmitter` sends, `Drainer` decides what and when.

Events go to Prefect's `POST {PREFECT_API_URL}/events` (a JSON list; 204), a few at a
time in sequence order. A connection error, a 5xx (a busy SQLite server answers 503
"database is locked") or a 4xx that says nothing about the event (401/403 credentials, 404
wrong URL, 408, 429) leaves the events pending: the drainer stops, backs off (0.2 s
doubling to 10 s) and retries from the same event, never skipping ahead. Any other 4xx
means Prefect will never take the event: a refused batch is retried one event at a time,
and the refused event is marked failed for an operator to inspect and requeue.

The Prefect event id is derived from the DAQ's event id, so re-sending after a crash
between send and mark is harmless: Prefect drops the repeated id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import httpx
from starlette.concurrency import run_in_threadpool

from prefect_beamline import metrics
from prefect_beamline.gateway.outbox import Outbox, StoredEvent

logger = logging.getLogger("prefect_beamline.gateway")

# 4xx answers that are about the connection (credentials, URL, rate), not the event.
RETRYABLE_CLIENT_ERRORS = frozenset({401, 403, 404, 408, 429})
MAX_ERROR_TEXT = 500


@dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt after Prefect could not take an event, seconds."""

    start_s: float = 0.2
    max_s: float = 10.0

    def after(self, failures: int) -> float:
        """Delay after `failures` consecutive failed attempts (>= 1)."""
        return min(self.start_s * 2 ** (failures - 1), self.max_s)


@dataclass(frozen=True)
class EmitResult:
    """What Prefect made of one POST: taken, retry later, or refused for good."""

    outcome: Literal["emitted", "retry", "refused"]
    message: str = ""


def prefect_auth_headers() -> dict[str, str]:
    """Authorization as Prefect's own client sends it (auth string, else API key)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    auth_string = PREFECT_API_AUTH_STRING.value()
    if auth_string:
        token = base64.b64encode(str(auth_string).encode()).decode()
        return {"Authorization": f"Basic {token}"}
    api_key = PREFECT_API_KEY.value()
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


class PrefectEmitter:
    """HTTP client of Prefect's events API; use as `async with emitter: ...`."""

    def __init__(
        self,
        api_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = headers or {}
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> PrefectEmitter:
        self._client = httpx.AsyncClient(
            headers=self._headers, timeout=self._timeout_s, transport=self._transport
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("PrefectEmitter used outside `async with`")
        return self._client

    async def send(self, events: list[dict[str, Any]]) -> EmitResult:
        """POST a batch of Prefect events (in order) and classify the answer."""
        url = f"{self.api_url}/events"
        try:
            response = await self.client.post(url, json=events)
        except httpx.HTTPError as error:
            return EmitResult("retry", f"Prefect API {url} unreachable: {error!r}")
        if response.is_success:
            return EmitResult("emitted")
        message = (
            f"Prefect API {url} answered {response.status_code}: {response.text[:MAX_ERROR_TEXT]}"
        )
        if response.status_code >= 500 or response.status_code in RETRYABLE_CLIENT_ERRORS:
            return EmitResult("retry", message)
        return EmitResult("refused", message)

    async def reachable(self, timeout_s: float = 1.0) -> bool:
        """Whether Prefect's `/health` answers 200 right now."""
        try:
            response = await self.client.get(f"{self.api_url}/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


@dataclass
class DrainerStatus:
    """What /health reports about the link to Prefect."""

    prefect_reachable: bool | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_emitted_at: datetime | None = None
    emitted: int = 0
    consecutive_failures: int = 0


class Drainer:
    """Background task of the gateway: emits pending events, in order, until stopped.

    `wake()` after each accepted event, so the happy path emits at once instead of on a
    poll. While idle it still looks at the outbox every `idle_poll_s`, which picks up
    events requeued from another process (the CLI). During a backoff it does not wake
    early: new events wait behind the pending ones anyway.
    """

    def __init__(
        self,
        outbox: Outbox,
        emitter: PrefectEmitter,
        *,
        batch_size: int = 20,
        backoff: Backoff | None = None,
        idle_poll_s: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.emitter = emitter
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.idle_poll_s = idle_poll_s
        self.status = DrainerStatus()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Drain, then wait for a wake-up (or the idle poll); back off after failures."""
        async with self.emitter:
            while True:
                self._wake.clear()
                try:
                    drained = await self.drain_once()
                except Exception as error:  # the outbox database failed: keep trying
                    logger.exception("draining the outbox failed")
                    self._failed(f"outbox drain failed: {error!r}")
                    drained = False
                if drained:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll_s)
                else:
                    await asyncio.sleep(self.backoff.after(self.status.consecutive_failures))

    async def drain_once(self) -> bool:
        """Emit pending events in order until none is left (True) or Prefect cannot take
        one now (False: retry later from the same event)."""
        while True:
            batch = await run_in_threadpool(self.outbox.pending, self.batch_size)
            if not batch:
                return True
            if not await self._emit(batch):
                return False

    async def _emit(self, batch: list[StoredEvent]) -> bool:
        result = await self.emitter.send([row.event.to_prefect_event() for row in batch])
        sequences = [row.sequence for row in batch]
        if result.outcome == "emitted":
            await run_in_threadpool(self.outbox.mark_emitted, sequences)
            metrics.record_emitted(batch)
            self.status.prefect_reachable = True
            self.status.consecutive_failures = 0
            self.status.emitted += len(batch)
            self.status.last_emitted_at = datetime.now(UTC)
            return True
        if result.outcome == "retry":
            self.status.prefect_reachable = False
            self._failed(result.message)
            logger.warning("%d event(s) kept pending: %s", len(batch), result.message)
            await run_in_threadpool(
                lambda: self.outbox.record_failure(sequences, result.message, give_up=False)
            )
            return False
        self.status.prefect_reachable = True
        if len(batch) > 1:  # find the event Prefect refuses; emit the others in order
            for row in batch:
                if not await self._emit([row]):
                    return False
            return True
        logger.error("event %s refused by Prefect: %s", batch[0].event_id, result.message)
        self.status.last_error = result.message
        self.status.last_error_at = datetime.now(UTC)
        await run_in_threadpool(
            lambda: self.outbox.record_failure(sequences, result.message, give_up=True)
        )
        metrics.record_dead_lettered(batch)
        return True

    def _failed(self, message: str) -> None:
        self.status.consecutive_failures += 1
        self.status.last_error = message
        self.status.last_error_at = datetime.now(UTC)
