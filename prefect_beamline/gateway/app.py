"""The gateway's HTTP API: validate, authenticate, store, answer 202, then emit.

Bodies are read raw (to bound their size and check their signature) and validated
here, so every refusal names what was wrong: 400 for unparsable JSON, 401 for missing
or wrong credentials, 413 for an oversized body, 422 naming the field, 404/409 when a
message refers to a collection or run the gateway does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.auth import SIGNATURE_HEADER, AuthError, check_signature, check_token
from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.mapping import (
    BlueskyDocument,
    CollectionLookup,
    MappingError,
    ZocaloTrigger,
    bluesky_start_to_event,
    bluesky_stop_to_event,
    zocalo_to_event,
)
from prefect_beamline.gateway.outbox import SKIPPED, Outbox
from prefect_beamline.settings import BeamlineSettings


class RequestError(Exception):
    """A refused request: HTTP status and a message naming the problem."""

    def __init__(self, status_code: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(str(detail))
        self.status_code = status_code
        self.detail = detail


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for endpoints that validate the raw body themselves."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _field_errors(error: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    return [
        {
            "field": prefix + ".".join(str(part) for part in item["loc"]),
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors()
    ]


def create_app(
    settings: BeamlineSettings,
    outbox: Outbox,
    api_url: str,
    lookup: CollectionLookup,
) -> FastAPI:
    """The gateway app; the drainer runs in its lifespan."""
    drainer = Drainer(outbox, api_url)
    token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    secret = (
        settings.gateway_hmac_secret.get_secret_value() if settings.gateway_hmac_secret else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(drainer.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="prefect-beamline gateway",
        description="Receives data-collection announcements from a DAQ and hands them to "
        "Prefect as events. Every accepted announcement is stored before the 202.",
        version="1",
        lifespan=lifespan,
    )
    app.state.drainer = drainer
    app.state.outbox = outbox

    @app.exception_handler(RequestError)
    async def _refused(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    async def authenticated_body(request: Request) -> bytes:
        try:
            check_token(request.headers.get("authorization"), token)
        except AuthError as error:
            raise RequestError(401, str(error)) from None
        limit = settings.gateway_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body of {declared} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes")
        try:
            check_signature(request.headers.get(SIGNATURE_HEADER), bytes(body), secret)
        except AuthError as error:
            raise RequestError(401, str(error)) from None
        return bytes(body)

    def parse(body: bytes, model: type[BaseModel]) -> Any:
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"body is not valid JSON: {error}") from None
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise RequestError(422, _field_errors(error)) from None

    async def accept(event: CollectionEvent, body: bytes) -> JSONResponse:
        sequence, is_new = await run_in_threadpool(
            outbox.add, event, body, event_id=event.event_id, source=event.source
        )
        if is_new:
            drainer.wake()
        return JSONResponse(
            {
                "event_id": event.event_id,
                "prefect_event_id": str(event.prefect_event_id),
                "status": "accepted" if is_new else "duplicate",
                "sequence": sequence,
            },
            status_code=202 if is_new else 200,
        )

    def mapped(build: Callable[[], CollectionEvent]) -> CollectionEvent:
        try:
            return build()
        except MappingError as error:
            raise RequestError(error.status_code, str(error)) from None
        except ValidationError as error:
            raise RequestError(422, _field_errors(error, "doc.")) from None

    @app.post(
        "/api/v1/collections",
        status_code=202,
        openapi_extra=_body_schema(CollectionEvent),
        summary="Announce a data collection (project schema)",
    )
    async def post_collection(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        event: CollectionEvent = parse(body, CollectionEvent)
        return await accept(event, body)

    @app.post(
        "/api/v1/zocalo",
        status_code=202,
        openapi_extra=_body_schema(ZocaloTrigger),
        summary="Zocalo trigger message (dodal ZocaloTrigger), resolved through the LIMS",
    )
    async def post_zocalo(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        message: ZocaloTrigger = parse(body, ZocaloTrigger)
        collection = await run_in_threadpool(
            lambda: mapped(lambda: zocalo_to_event(message, lookup))
        )
        return await accept(collection, body)

    @app.post(
        "/api/v1/bluesky",
        status_code=202,
        openapi_extra=_body_schema(BlueskyDocument),
        summary="Bluesky RunEngine start/stop document",
    )
    async def post_bluesky(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        document: BlueskyDocument = parse(body, BlueskyDocument)
        if document.name == "start":
            event = mapped(lambda: bluesky_start_to_event(document.doc))
            await run_in_threadpool(outbox.remember_run_start, event.event_id, document.doc)
            return await accept(event, body)
        start = await run_in_threadpool(outbox.run_start, str(document.doc.get("run_start")))
        event = mapped(lambda: bluesky_stop_to_event(document.doc, start))
        exit_status = document.doc.get("exit_status", "success")
        if exit_status != "success":
            # Kept for the record, not processed: the run did not complete.
            sequence, is_new = await run_in_threadpool(
                lambda: outbox.add(
                    event,
                    body,
                    event_id=event.event_id,
                    source="bluesky",
                    status=SKIPPED,
                    note=f"run ended with exit_status {exit_status!r}",
                )
            )
            return JSONResponse(
                {"event_id": event.event_id, "status": "skipped", "sequence": sequence},
                status_code=202 if is_new else 200,
            )
        return await accept(event, body)

    @app.get("/health", summary="Gateway health, outbox backlog and the link to Prefect")
    async def health() -> dict[str, Any]:
        pending = await run_in_threadpool(outbox.count, "pending")
        return {
            "status": "ok",
            "pending": pending,
            "prefect_api_url": api_url,
            "prefect_reachable": drainer.status.prefect_reachable,
            "last_error": drainer.status.last_error,
            "emitted_since_start": drainer.status.emitted,
        }

    @app.get("/api/v1/outbox", summary="Inspect stored events (pending, emitted, failed)")
    async def list_outbox(request: Request, status: str | None = None) -> JSONResponse:
        try:
            check_token(request.headers.get("authorization"), token)
        except AuthError as error:
            raise RequestError(401, str(error)) from None
        rows = await run_in_threadpool(outbox.list, status)
        return JSONResponse([row.as_dict() for row in rows])

    return app
