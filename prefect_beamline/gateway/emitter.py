"""The drainer: sends pending outbox events to Prefect, in order, retrying with backoff.

Events go to Prefect's `POST /api/events`. Connection errors and 5xx (a busy SQLite
server answers 503) leave the event pending and back off; nothing is skipped, so order
is kept. A 4xx means Prefect will never take the event: it is marked failed for an
operator to inspect and requeue. The Prefect event id is derived from the DAQ's id, so
re-sending after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from starlette.concurrency import run_in_threadpool

from prefect_beamline.gateway.outbox import Outbox, StoredEvent

logger = logging.getLogger("prefect_beamline.gateway")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0


@dataclass
class DrainerStatus:
    """What /health reports about the link to Prefect."""

    prefect_reachable: bool | None = None
    last_error: str | None = None
    emitted: int = 0


class Drainer:
    """Background task of the gateway; `wake()` after each accepted event."""

    def __init__(self, outbox: Outbox, api_url: str) -> None:
        self.outbox = outbox
        self.api_url = api_url.rstrip("/")
        self.status = DrainerStatus()
        self._wake = asyncio.Event()
        self._backoff = BACKOFF_START_S

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                self._wake.clear()
                try:
                    drained = await self.drain_once(client)
                except Exception as error:  # keep draining whatever happens
                    logger.exception("outbox drain failed")
                    self.status.last_error = repr(error)
                    drained = False
                if drained:
                    self._backoff = BACKOFF_START_S
                    await self._wake.wait()
                else:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=self._backoff)
                    except TimeoutError:
                        pass
                    self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    async def drain_once(self, client: httpx.AsyncClient) -> bool:
        """Send pending events in order; False when Prefect could not take one (retry)."""
        while True:
            batch = await run_in_threadpool(self.outbox.pending, 50)
            if not batch:
                return True
            for stored in batch:
                if not await self._emit(client, stored):
                    return False

    async def _emit(self, client: httpx.AsyncClient, stored: StoredEvent) -> bool:
        assert stored.event is not None
        try:
            response = await client.post(
                f"{self.api_url}/events", json=[stored.event.to_prefect_event()]
            )
        except httpx.HTTPError as error:
            return await self._retry_later(stored, f"Prefect unreachable: {error!r}")
        if response.status_code >= 500:
            return await self._retry_later(
                stored, f"Prefect answered {response.status_code}: {response.text[:500]}"
            )
        self.status.prefect_reachable = True
        if response.status_code >= 400:
            message = f"Prefect refused the event ({response.status_code}): {response.text[:500]}"
            logger.error("event %s: %s", stored.event_id, message)
            await run_in_threadpool(
                self.outbox.record_failure, stored.sequence, message, give_up=True
            )
            return True
        await run_in_threadpool(self.outbox.mark_emitted, stored.sequence)
        self.status.emitted += 1
        self.status.last_error = None
        return True

    async def _retry_later(self, stored: StoredEvent, message: str) -> bool:
        self.status.prefect_reachable = False
        self.status.last_error = message
        logger.warning("event %s kept pending: %s", stored.event_id, message)
        await run_in_threadpool(self.outbox.record_failure, stored.sequence, message, give_up=False)
        return False
