"""`GET /metrics` of the gateway: Prometheus text, open to this machine, else token-only.

A scrape from a loopback address (a Prometheus or node agent on the gateway's host)
needs no credentials; from anywhere else it must carry the operator token
(`Authorization: Bearer $PREFECT_BEAMLINE_OPERATOR_TOKEN`), and without an operator token
configured it is refused: the metrics reveal traffic, sources and backlog.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from prefect_beamline.gateway.auth import AuthError, check_token
from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.metrics import EXPOSITION_CONTENT_TYPE, gateway_exposition, is_loopback
from prefect_beamline.settings import BeamlineSettings

OPERATOR_TOKEN_VARIABLE = "PREFECT_BEAMLINE_OPERATOR_TOKEN"


def operator_token(settings: BeamlineSettings) -> str | None:
    """The operator token: the settings field where it exists, else the variable."""
    configured: Any = getattr(settings, "operator_token", None)
    if configured is not None:
        return str(configured.get_secret_value())
    return os.environ.get(OPERATOR_TOKEN_VARIABLE) or None


def scrape_refusal(request: Request, token: str | None) -> JSONResponse | None:
    """None when this request may read the metrics, else the 401/403 answer."""
    client = request.client.host if request.client else None
    if is_loopback(client):
        return None
    if token is None:
        return JSONResponse(
            {
                "detail": f"/metrics is open to loopback addresses only (client {client}); "
                f"set {OPERATOR_TOKEN_VARIABLE} to scrape from elsewhere"
            },
            status_code=403,
        )
    try:
        check_token(request.headers.get("authorization"), token)
    except AuthError as error:
        return JSONResponse(
            {"detail": f"/metrics from {client}: {error} (the operator token)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def add_metrics_endpoint(
    app: FastAPI, *, settings: BeamlineSettings, outbox: Outbox, drainer: Drainer
) -> None:
    token = operator_token(settings)

    @app.get(
        "/metrics",
        summary="Prometheus metrics (loopback, or the operator token)",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
            401: {"description": "Operator token missing or wrong"},
            403: {"description": "Not loopback and no operator token configured"},
        },
    )
    async def metrics(request: Request) -> Response:
        refusal = scrape_refusal(request, token)
        if refusal is not None:
            return refusal
        counts = await run_in_threadpool(outbox.counts)
        if drainer.emitter.is_open:
            reachable: bool | None = await drainer.emitter.reachable()
        else:
            reachable = drainer.status.prefect_reachable
        body = await run_in_threadpool(gateway_exposition, counts, reachable)
        return Response(body, media_type=EXPOSITION_CONTENT_TYPE)
