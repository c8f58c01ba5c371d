"""The announcement endpoints served without FastAPI's per-request machinery.

A POST to `/api/v1/collections`, `/zocalo` or `/bluesky` does all its own work (token,
size, signature, parsing, validation: see `app`), so FastAPI's routing, dependency
solving, exception middleware and exit stack add only CPU: about a third of a request's
on the event loop, which at 2,000 requests a second is queueing time in every answer.
This ASGI middleware hands those POSTs straight to their handler and turns a refusal into
its answer the way the app's exception handler does. Everything else, and every request
while tracing is on (FastAPI's telemetry opens the request span), goes through FastAPI,
which also documents these endpoints in its OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from prefect_beamline.tracing import tracing_enabled

Handler = Callable[[Request], Awaitable[Response]]
Refusal = Callable[[Request, Any], Awaitable[Response]]


class AnnouncementFastPath:
    """ASGI middleware: `handlers` by path answer POSTs directly; `refused` answers an
    exception of type `refusal` that a handler raised."""

    def __init__(
        self,
        app: Any,
        *,
        handlers: Mapping[str, Handler],
        refusal: type[Exception],
        refused: Refusal,
    ) -> None:
        self.app = app
        self.handlers = handlers
        self.refusal = refusal
        self.refused = refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = (
            self.handlers.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handler is None or tracing_enabled():
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except self.refusal as error:
            response = await self.refused(request, error)
        await response(scope, receive, send)
