"""The gateway's HTTP API: authenticate, bound, parse, validate, store, answer; then emit.

Every POST goes through the same steps, and each refusal names what was wrong:

1. the DAQ's bearer token (401; the operator's token: 403), when `gateway_token` is set
   (`auth.GatewayAccess` refuses to start a gateway that nothing authenticates);
2. body size, by Content-Length and by the bytes actually read (413);
3. HMAC-SHA256 of the raw body in `X-Beamline-Signature` (401), when
   `gateway_hmac_secret` is set;
4. JSON parsing (400, with the position), and every value Prefect could not take later
   (422, naming its path; see `emittable`);
5. validation (422, naming each field);
6. mapping Zocalo/Bluesky messages onto a collection event (404 unknown collection, 409
   stop without its start, 422, 503 when the LIMS cannot be read), and every data file
   under `PREFECT_BEAMLINE_DATA_ROOTS` (422 naming the path and the roots);
7. the Prefect event's size (413); commit to the outbox (with other requests' events:
   group commit), then 202 `accepted`; 200 `duplicate` for a known event id with the same
   body, 409 for a known id with a different body, 503 with `Retry-After` when the pending
   backlog is at `outbox_max_pending`. Nothing is written before this step, so a refused
   request leaves no trace.

Bodies are read raw (to bound and sign them) and validated here, not by FastAPI, so the
OpenAPI schemas are declared explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from prefect_beamline import metrics, tracing
from prefect_beamline.data_roots import OutsideDataRoots
from prefect_beamline.events import CollectionEvent, prefect_event_id_text
from prefect_beamline.gateway.auth import (
    SIGNATURE_HEADER,
    AuthError,
    Forbidden,
    GatewayAccess,
    Role,
    check_signature,
)
from prefect_beamline.gateway.collection_results import add_results_endpoint
from prefect_beamline.gateway.door_paths import DoorPathCheck
from prefect_beamline.gateway.emittable import (
    NotEmittable,
    encode_for_prefect,
    flaws,
    prefect_event_limit,
    too_deep,
)
from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.fast_path import AnnouncementFastPath
from prefect_beamline.gateway.handled import HandledPairs, NotHandled
from prefect_beamline.gateway.live_results import add_live_results_endpoints
from prefect_beamline.gateway.mapping import (
    BLUESKY_IGNORED_DOCUMENTS,
    RUN_NOT_COMPLETED,
    BlueskyDocument,
    BlueskyStart,
    CollectionLookup,
    InvalidDocument,
    MappingError,
    ZocaloTrigger,
    bluesky_start_to_event,
    bluesky_stop_to_event,
    describe_errors,
    parse_bluesky_start,
    parse_bluesky_stop,
    summarize_errors,
    zocalo_to_event,
)
from prefect_beamline.gateway.metrics_endpoint import add_metrics_endpoint
from prefect_beamline.gateway.outbox import PENDING, SKIPPED, Outbox, OutboxStatus, Submission
from prefect_beamline.gateway.refused import RefusedStarts
from prefect_beamline.gateway.writer import GroupCommitWriter
from prefect_beamline.lims import Lims
from prefect_beamline.settings import BeamlineSettings

logger = logging.getLogger("prefect_beamline.gateway")
# What a DAQ refused for a full backlog is told to wait (the drainer empties hundreds of
# events a second once Prefect takes them again).
BACKLOG_RETRY_AFTER_S = 5
# How long a shutdown waits for the drainer to stop after cancelling it.
SHUTDOWN_WAIT_S = 10.0
# On a listing with more rows than returned: the `after` of the next page.
NEXT_PAGE_HEADER = "X-Outbox-Next-After"
Model = TypeVar("Model", bound=BaseModel)


class Receipt(BaseModel):
    """The answer to an accepted (202) or repeated (200) announcement."""

    event_id: str = Field(description="The announcement's id (from the DAQ or derived)")
    prefect_event_id: str = Field(description="Id of the Prefect event it becomes (UUID5)")
    status: Literal["accepted", "duplicate", "skipped"] = Field(
        description="accepted: stored, will be emitted; duplicate: this id was stored "
        "before, nothing written; skipped: stored, not emitted (Bluesky run not completed)"
    )
    sequence: int = Field(description="Position in the outbox; events reach Prefect in order")
    collection_id: int = Field(
        description="The LIMS dataCollectionId (for a Bluesky start without one: created "
        "by the gateway)"
    )


class Ignored(BaseModel):
    """The answer to a Bluesky document other than start or stop (200, nothing stored)."""

    status: Literal["ignored"] = Field(description="Not a start or stop document")
    name: str = Field(description="The document's name")


class Refusal(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="What is wrong; 422: one per field")
    message: str | None = Field(None, description="422: every field and why, in one line")


class RequestError(Exception):
    """A refused request: HTTP status and a detail naming the problem."""

    def __init__(
        self,
        status_code: int,
        detail: str | list[dict[str, Any]],
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or str(detail))
        self.status_code = status_code
        self.detail = detail
        self.message = message
        self.headers = headers


_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "Body is not JSON (position named)"},
    401: {"model": Refusal, "description": "Token or signature missing or wrong"},
    403: {"model": Refusal, "description": "A valid token of the other role (DAQ/operator)"},
    409: {"model": Refusal, "description": "Event id accepted before with a different body"},
    413: {
        "model": Refusal,
        "description": "Body larger than gateway_max_body_bytes, or its event larger than "
        "Prefect takes",
    },
    422: {
        "model": Refusal,
        "description": "A field is missing or invalid, or a value Prefect could not take "
        "(fields named)",
    },
    503: {
        "model": Refusal,
        "description": "Outbox or LIMS unavailable, or outbox backlog full (Retry-After); retry",
    },
}


def _post_docs(
    model: type[BaseModel], extra: dict[int | str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """OpenAPI for an endpoint that reads its body raw: body schema and answers."""
    return {
        "status_code": 202,
        "response_model": Receipt,
        "responses": {200: {"model": Receipt, "description": "Duplicate"}, **_REFUSALS}
        | (extra or {}),
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": self_contained_schema(model)}},
            }
        },
    }


def self_contained_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` written in place: pydantic's `#/$defs/...`
    references would not resolve inside the OpenAPI document (our models never nest
    themselves, so inlining ends)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        inlined = {key: inline(value) for key, value in node.items() if key != "$ref"}
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            return inline(definitions[name]) | inlined
        return inlined

    return dict(inline(schema))


def parse_json(body: bytes) -> Any:
    """The JSON document, or 400 naming the position, or 422 naming each value Prefect
    could not take (non-finite numbers, unpaired surrogates, too deep: see `emittable`)."""
    try:
        document = json.loads(body, parse_constant=float)  # NaN, Infinity: refused below
    except json.JSONDecodeError as error:
        raise RequestError(
            400,
            f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno} "
            f"(char {error.pos})",
        ) from None
    except UnicodeDecodeError as error:
        raise RequestError(
            400, f"body is not UTF-8 JSON: {error.reason} at byte {error.start}"
        ) from None
    except RecursionError:
        raise _not_emittable([too_deep()]) from None
    except ValueError as error:
        raise RequestError(400, f"body is not valid JSON: {error}") from None
    if found := flaws(document):
        raise _not_emittable(found)
    return document


def _not_emittable(found: list[dict[str, str]]) -> RequestError:
    errors: list[dict[str, Any]] = list(found)
    return RequestError(422, errors, summarize_errors(errors))


def validate(model: type[Model], document: Any) -> Model:
    """The validated model, or 422 naming each wrong field by its path in the body."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        errors = describe_errors(error)
        raise RequestError(422, errors, summarize_errors(errors)) from None


def build_app(
    *,
    settings: BeamlineSettings,
    outbox: Outbox,
    drainer: Drainer,
    lookup: CollectionLookup,
    access: GatewayAccess | None = None,
    lims: Lims | None = None,
) -> FastAPI:
    """The gateway app; the drainer runs as a background task of its lifespan.

    `lims` creates the DataCollection of a Bluesky start without a `data_collection_id`
    and serves `GET /api/v1/collections/{id}/results`; None: neither (such a start is
    refused).
    `access` defaults to the settings' tokens on `settings.gateway_host`; a configuration
    that would leave the gateway open raises GatewayConfigError here.
    """
    access = access or GatewayAccess.from_settings(settings, settings.gateway_host)
    secret = access.hmac_secret
    data_roots = settings.data_roots
    door_paths = DoorPathCheck(data_roots)
    limit = settings.gateway_max_body_bytes
    event_limit = prefect_event_limit()
    writer = GroupCommitWriter(outbox, max_pending=settings.outbox_max_pending)
    drainer.door_busy = writer.busy  # a burst's requests go first
    handled = HandledPairs.from_prefect_yaml()
    refused_starts = RefusedStarts()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if access.open_without_tokens:
            logger.warning("gateway accepts unauthenticated requests (loopback opt-in)")
        if not data_roots:
            logger.warning("PREFECT_BEAMLINE_DATA_ROOTS is not set: announcements are refused")
        task = asyncio.create_task(drainer.run(), name="outbox-drainer")
        drainer.wake()  # emit what was pending before a restart
        try:
            yield
        finally:
            task.cancel()
            stopped, _still_running = await asyncio.wait({task}, timeout=SHUTDOWN_WAIT_S)
            if not stopped:  # never hang a shutdown; the outbox keeps what is pending
                logger.error("the outbox drainer did not stop within %s s", SHUTDOWN_WAIT_S)
            elif not task.cancelled() and task.exception() is not None:
                logger.error("the outbox drainer had failed", exc_info=task.exception())
            await writer.stop()

    app = FastAPI(
        title="prefect-beamline gateway",
        description="Receives data-collection announcements from a DAQ (project schema, "
        "Zocalo trigger messages, Bluesky documents) and hands them to Prefect as events. "
        "Every accepted announcement is committed to the outbox before the 202; the outbox "
        "is emitted in order, and kept while Prefect is unreachable.",
        version="1",
        lifespan=lifespan,
        telemetry={"exclude": tracing.not_an_announcement},
    )
    app.state.outbox = outbox
    app.state.drainer = drainer
    add_metrics_endpoint(app, access=access, outbox=outbox, drainer=drainer)
    if lims is not None:
        add_results_endpoint(app, access=access, lims=lims)
    app.state.writer = writer

    @app.exception_handler(RequestError)
    async def _refused(request: Request, error: RequestError) -> JSONResponse:
        metrics.record_refused(request.url.path, error.status_code)
        content: dict[str, Any] = {"detail": error.detail}
        if error.message is not None:
            content["message"] = error.message
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else error.headers
        return JSONResponse(content, status_code=error.status_code, headers=headers)

    def authenticate(request: Request, role: Role = "daq") -> None:
        """The DAQ's token for announcements, the operator's for the operator endpoints."""
        check = access.check_operator if role == "operator" else access.check_daq
        try:
            check(request.headers.get("authorization"))
        except Forbidden as error:
            raise RequestError(403, str(error)) from None
        except AuthError as error:
            raise RequestError(401, str(error)) from None

    # The live results stream (prefect_beamline.live publishes, the DAQ follows).
    add_live_results_endpoints(
        app, authenticate=authenticate, refuse=RequestError, max_body_bytes=limit
    )

    async def authenticated_body(request: Request) -> bytes:
        """Token, size limit, then the signature of the bytes actually received."""
        authenticate(request)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise RequestError(400, f"Content-Length {declared!r} is not a number")
            if int(declared) > limit:
                raise RequestError(
                    413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes"
                )
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

    async def accept(
        event: CollectionEvent,
        body: bytes,
        *,
        status: str = PENDING,
        note: str | None = None,
        bluesky_start: dict[str, Any] | None = None,
    ) -> JSONResponse:
        """Checked at the door (`admissible`), commit, then answer; 503 (retry) if the
        outbox cannot be written or is full, 409 if the event id was accepted before with
        a different body."""
        event, encoded = admissible(event)
        try:
            admission = await writer.submit(Submission(event, body, status, note, bluesky_start))
        except SQLAlchemyError as error:
            logger.exception("outbox write failed for event %s", event.event_id)
            raise RequestError(
                503, f"outbox unavailable, nothing stored; retry: {error.__class__.__name__}"
            ) from None
        if admission.outcome == "full":
            raise RequestError(
                503,
                f"outbox backlog full: {settings.outbox_max_pending} events wait for Prefect "
                f"(outbox_max_pending); nothing stored, retry after {BACKLOG_RETRY_AFTER_S} s",
                headers={"Retry-After": str(BACKLOG_RETRY_AFTER_S)},
            )
        if admission.outcome == "conflict":
            raise RequestError(
                409,
                f"event_id {event.event_id!r} was accepted before (sequence "
                f"{admission.sequence}) with a different body; a new announcement needs a "
                "new event_id",
            )
        is_new = admission.is_new
        sequence = admission.sequence
        assert sequence is not None
        if is_new and status == PENDING:
            drainer.encoded.put(sequence, encoded)
            drainer.wake()
        answer = ("accepted" if status == PENDING else "skipped") if is_new else "duplicate"
        metrics.record_accepted(event.source, answer)
        receipt = {  # a `Receipt`, built as a dict: nothing here needs validating
            "event_id": event.event_id,
            "prefect_event_id": prefect_event_id_text(event.event_id),
            "status": answer,
            "sequence": sequence,
            "collection_id": event.collection_id,
        }
        return JSONResponse(receipt, status_code=202 if is_new else 200)

    def admissible(event: CollectionEvent) -> tuple[CollectionEvent, bytes]:
        """A deployment processes its technique and experiment type (422), its data files
        lie under a root (422), Prefect would take its size (413); the event, traced, and
        its Prefect event as the drainer will send it."""
        try:
            handled.check(event)
        except NotHandled as error:
            raise RequestError(422, str(error)) from None
        try:
            # Inline, not on a thread: an lstat or two (the files need not exist yet)
            # cost less than the hop to a worker thread and back.
            door_paths.check(event.data_files)
        except OutsideDataRoots as error:
            raise RequestError(422, str(error)) from None
        event = tracing.stamp_trace(event)
        try:
            return event, encode_for_prefect(event, event_limit)
        except NotEmittable as error:
            raise RequestError(413, str(error)) from None

    async def accept_start(
        start: BlueskyStart, body: bytes, document: dict[str, Any]
    ) -> JSONResponse:
        """A start document; without a dataCollectionId, the LIMS makes one once the
        start has passed the door (a start posted again gets the same one)."""
        event = bluesky_start_to_event(start)
        if start.data_collection_id is None:
            stored = await run_in_threadpool(outbox.bluesky_start, start.uid)
            if stored is not None and stored.get("data_collection_id"):
                start = start.with_collection(int(stored["data_collection_id"]))
            else:
                admissible(event)
                if lims is None:
                    raise RequestError(
                        422, "doc.data_collection_id: required (this gateway creates none)"
                    )
                try:
                    created = await run_in_threadpool(lims.create_data_collection, event)
                except ValueError as error:
                    raise RequestError(422, f"doc: {error}") from None
                except Exception as error:
                    logger.exception(
                        "LIMS: creating the data collection of run %s failed", start.uid
                    )
                    raise RequestError(
                        503, f"LIMS: creating the data collection failed; retry: {error!r}"
                    ) from None
                start = start.with_collection(created)
            event = bluesky_start_to_event(start)
            document = document | {"data_collection_id": start.data_collection_id}
        return await accept(event, body, bluesky_start=document)

    @app.post(
        "/api/v1/collections",
        summary="Announce a data collection (project schema)",
        **_post_docs(CollectionEvent),
    )
    async def post_collection(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        event = validate(CollectionEvent, parse_json(body))
        return await accept(event, body)

    @app.post(
        "/api/v1/zocalo",
        summary="Zocalo trigger message (as dodal's ZocaloTrigger sends it)",
        description="`start` → started, `end` → finished. The collection is read from the "
        "LIMS by `ispyb_dcid`. Event id: `guid`, else `zocalo-<dcid>-<event>` (plus "
        "`-<message_index>` for a start). `start_frame_index`/`number_of_frames` of a start "
        "set the image range. Recipes and other parameters are stored, not passed on.",
        **_post_docs(ZocaloTrigger, {404: {"model": Refusal, "description": "Unknown ispyb_dcid"}}),
    )
    async def post_zocalo(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        message = validate(ZocaloTrigger, parse_json(body))
        dcid = message.parameters.ispyb_dcid
        try:
            event = await run_in_threadpool(zocalo_to_event, message, lookup)
        except MappingError as error:
            raise RequestError(error.status_code, str(error)) from None
        except Exception as error:
            logger.exception("LIMS lookup of data collection %s failed", dcid)
            raise RequestError(
                503, f"LIMS lookup of data collection {dcid} failed; retry: {error!r}"
            ) from None
        return await accept(event, body)

    @app.post(
        "/api/v1/bluesky",
        summary="Bluesky RunEngine document: start or stop (others are ignored)",
        description="A start document must carry technique, beamline, visit, "
        "data_collection_id and data_files (and may carry experiment_type, image_range, "
        "grid, processing): → started, event id = uid. A stop document → finished, event "
        "id = its uid, completed from the stored start. A stop with exit_status abort or "
        "fail is stored as `skipped` and not emitted. Other document names: 200 ignored.",
        **_post_docs(
            BlueskyDocument,
            {
                200: {"model": Receipt | Ignored, "description": "Duplicate, or ignored"},
                409: {"model": Refusal, "description": "Stop document of an unknown start"},
            },
        ),
    )
    async def post_bluesky(request: Request) -> JSONResponse:
        body = await authenticated_body(request)
        document = validate(BlueskyDocument, parse_json(body))
        if document.name in BLUESKY_IGNORED_DOCUMENTS:
            ignored = Ignored(status="ignored", name=document.name)
            return JSONResponse(ignored.model_dump(), status_code=200)
        if document.name == "start":
            with refused_starts.remembered(document.doc.get("uid")):
                try:
                    start = parse_bluesky_start(document.doc)
                    return await accept_start(start, body, document.doc)
                except InvalidDocument as error:
                    raise RequestError(422, error.errors, str(error)) from None
                except MappingError as error:
                    raise RequestError(error.status_code, str(error)) from None
        try:
            stop = parse_bluesky_stop(document.doc)
            stored = await run_in_threadpool(outbox.bluesky_start, stop.run_start)
            stored_start = BlueskyStart.model_validate(stored) if stored is not None else None
            event = bluesky_stop_to_event(stop, stored_start, refused_starts.reason(stop.run_start))
        except InvalidDocument as error:
            raise RequestError(422, error.errors, str(error)) from None
        except MappingError as error:
            raise RequestError(error.status_code, str(error)) from None
        if stop.exit_status != "success":
            note = RUN_NOT_COMPLETED.format(exit_status=stop.exit_status)
            if stop.reason:
                note += f"; reason: {stop.reason}"
            return await accept(event, body, status=SKIPPED, note=note)
        return await accept(event, body)

    @app.get(
        "/health",
        summary="Gateway up, outbox counts; with the operator token also Prefect and errors",
        description="Without an Authorization header: status and counts only. With the "
        "operator token: also the Prefect URL, its reachability and the last emit error.",
        responses={401: _REFUSALS[401], 403: _REFUSALS[403]},
    )
    async def health(request: Request) -> JSONResponse:
        detailed = access.operator_open or "authorization" in request.headers
        if detailed:
            authenticate(request, "operator")
        try:
            counts = await run_in_threadpool(outbox.counts)
        except SQLAlchemyError as error:
            down: dict[str, Any] = {"status": "error"}
            if detailed:
                down["detail"] = f"outbox unreadable: {error!r}"
            return JSONResponse(down, status_code=503)
        if not detailed:
            return JSONResponse(
                {
                    "status": "ok",
                    "pending": counts[PENDING],
                    "outbox": counts,
                    "emitted_since_start": drainer.status.emitted,
                }
            )
        if drainer.emitter.is_open:
            reachable: bool | None = await drainer.emitter.reachable()
        else:
            reachable = drainer.status.prefect_reachable
        status = drainer.status
        return JSONResponse(
            {
                "status": "ok",
                "pending": counts[PENDING],
                "outbox": counts,
                "prefect_api_url": drainer.emitter.api_url,
                "prefect_reachable": reachable,
                "last_error": status.last_error,
                "last_error_at": _iso(status.last_error_at),
                "last_emitted_at": _iso(status.last_emitted_at),
                "emitted_since_start": status.emitted,
            }
        )

    @app.get(
        "/api/v1/outbox",
        summary="Stored events, oldest first (operator token required)",
        responses={401: _REFUSALS[401], 403: _REFUSALS[403]},
    )
    async def list_outbox(
        request: Request,
        status: Annotated[
            OutboxStatus | None,
            Query(description="pending, emitted, failed or skipped; default all"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100_000, description="Most rows to return")] = 1000,
        after: Annotated[
            int, Query(ge=0, description="Only rows after this sequence (the next page)")
        ] = 0,
    ) -> JSONResponse:
        authenticate(request, "operator")
        page = await run_in_threadpool(outbox.page, status, limit, after)
        headers = {NEXT_PAGE_HEADER: str(page.next_after)} if page.more else None
        return JSONResponse([row.as_dict() for row in page.rows], headers=headers)

    # The last added is the outermost: the caller's trace context is current before an
    # announcement's handler runs, whichever path serves it.
    app.add_middleware(
        AnnouncementFastPath,
        handlers={
            "/api/v1/collections": post_collection,
            "/api/v1/zocalo": post_zocalo,
            "/api/v1/bluesky": post_bluesky,
        },
        refusal=RequestError,
        refused=_refused,
    )
    app.add_middleware(tracing.PropagateTraceContext)
    return app


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
