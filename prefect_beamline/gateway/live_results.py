"""The live results stream: per-image results and the grid-scan centre, to the DAQ.

The live analysis (`prefect_beamline.live`) POSTs each batch of results here with the
operator token; the DAQ follows `GET /api/v1/live/{collection_id}/stream` with its own
token as server-sent events. Every message gets a sequence number (the SSE `id`), so a
client that reconnects with `Last-Event-ID` (or `?after=`) misses nothing; a stream
ends after the collection's `end` message. Messages are kept in memory per collection
(bounded; the LIMS holds the durable copy), the oldest collections forgotten first.

Message types (`event:` line): `image` (image_number, n_spots, total_intensity,
d_min_angstrom, backlog_images, lag_s; serial crystallography: n_peaks and hit instead
of the spot fields), `centre` (the grid scan's X-ray centre, as the LIMS's
XrayCentringResult), `hit_rate` (a serial collection's chunk: first_image, last_image,
n_frames, n_hits, hit_rate, mean_peaks_per_hit, its mean radial profile), `status`
(backlog and lag without a result), `end`.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

LIVE_PREFIX = "/api/v1/live"
MESSAGE_TYPES = ("image", "centre", "hit_rate", "status", "end")
KEEPALIVE_S = 15.0


@dataclass
class _Collection:
    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ResultsHub:
    """Messages per collection and the clients waiting for more (one event loop)."""

    def __init__(self, max_collections: int = 256, max_messages: int = 200_000) -> None:
        self.max_collections = max_collections
        self.max_messages = max_messages
        self._collections: OrderedDict[int, _Collection] = OrderedDict()

    def _get(self, collection_id: int) -> _Collection:
        found = self._collections.get(collection_id)
        if found is None:
            found = self._collections[collection_id] = _Collection()
            while len(self._collections) > self.max_collections:
                self._collections.popitem(last=False)
        return found

    def publish(self, collection_id: int, messages: list[dict[str, Any]]) -> int:
        """Append messages; returns the last sequence number. ValueError when full."""
        collection = self._get(collection_id)
        if len(collection.messages) + len(messages) > self.max_messages:
            raise ValueError(
                f"collection {collection_id} holds {len(collection.messages)} messages, "
                f"the limit is {self.max_messages}"
            )
        sequence = collection.messages[-1][0] if collection.messages else 0
        for message in messages:
            sequence += 1
            collection.messages.append((sequence, message))
            if message["type"] == "end":
                collection.ended = True
        collection.changed.set()
        collection.changed = asyncio.Event()
        return sequence

    async def follow(
        self, collection_id: int, after: int
    ) -> AsyncIterator[tuple[int, dict[str, Any]] | None]:
        """Messages after sequence `after`, waiting for new ones; None as a keep-alive;
        stops after `end`."""
        while True:
            collection = self._get(collection_id)
            waiting = collection.changed
            new = [item for item in collection.messages if item[0] > after]
            for item in new:
                yield item
                after = item[0]
            if collection.ended and not [item for item in collection.messages if item[0] > after]:
                return
            try:
                async with asyncio.timeout(KEEPALIVE_S):  # not wait_for: see Drainer.run
                    await waiting.wait()
            except TimeoutError:
                yield None


def _check_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
        raise ValueError(f"each message must be an object with type one of {MESSAGE_TYPES}")
    return message


def add_live_results_endpoints(
    app: FastAPI,
    *,
    authenticate: Callable[[Request, Any], None],
    refuse: Callable[[int, str], Exception],
    max_body_bytes: int,
) -> ResultsHub:
    """The publish and follow endpoints on `app`; returns the hub they share."""
    hub = ResultsHub()
    app.state.live_results = hub

    @app.post(
        LIVE_PREFIX + "/{collection_id}/results",
        summary="Publish live results of a collection (operator token: the live analysis)",
        status_code=202,
    )
    async def publish(collection_id: int, request: Request) -> JSONResponse:
        authenticate(request, "operator")
        body = await request.body()
        if len(body) > max_body_bytes:
            raise refuse(413, f"body exceeds the limit of {max_body_bytes} bytes")
        try:
            messages = json.loads(body)
            if not isinstance(messages, list):
                raise ValueError("the body must be a JSON array of messages")
            checked = [_check_message(message) for message in messages]
            sequence = hub.publish(collection_id, checked)
        except ValueError as error:
            raise refuse(422, str(error)) from None
        return JSONResponse({"last_id": sequence}, status_code=202)

    @app.get(
        LIVE_PREFIX + "/{collection_id}/stream",
        summary="Follow a collection's live results as server-sent events (DAQ token)",
        response_class=StreamingResponse,
    )
    async def stream(
        collection_id: int,
        request: Request,
        after: Annotated[int, Query(ge=0, description="Only messages after this id")] = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        authenticate(request, "daq")
        start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after

        async def events() -> AsyncIterator[bytes]:
            async for item in hub.follow(collection_id, start):
                if item is None:
                    yield b": keep-alive\n\n"
                    continue
                sequence, message = item
                data = json.dumps(message, separators=(",", ":"))
                yield f"id: {sequence}\nevent: {message['type']}\ndata: {data}\n\n".encode()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return hub
