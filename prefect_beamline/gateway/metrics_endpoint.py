"""`GET /metrics` of the gateway: Prometheus text, open to this machine, else token-only.

A scrape from a loopback address (a Prometheus or node agent on the gateway's host)
needs no credentials; from anywhere else it must carry the operator token
(`Authorization: Bearer $PREFECT_BEAMLINE_OPERATOR_TOKEN`), and without an operator token
configured it is refused: the metrics reveal traffic, sources and backlog.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from prefect_beamline.gateway.auth import AuthError, Forbidden, GatewayAccess, is_loopback
from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.metrics import EXPOSITION_CONTENT_TYPE, gateway_exposition


def scrape_refusal(request: Request, access: GatewayAccess) -> JSONResponse | None:
    """None when this request may read the metrics, else the 401/403 answer."""
    client = request.client.host if request.client else None
    if client is not None and is_loopback(client):
        return None
    try:
        access.check_operator(request.headers.get("authorization"))
    except Forbidden as error:
        return JSONResponse({"detail": f"/metrics from {client}: {error}"}, status_code=403)
    except AuthError as error:
        return JSONResponse(
            {"detail": f"/metrics from {client}: {error} (the operator token)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def add_metrics_endpoint(
    app: FastAPI, *, access: GatewayAccess, outbox: Outbox, drainer: Drainer
) -> None:

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
        refusal = scrape_refusal(request, access)
        if refusal is not None:
            return refusal
        counts = await run_in_threadpool(outbox.counts)
        if drainer.emitter.is_open:
            reachable: bool | None = await drainer.emitter.reachable()
        else:
            reachable = drainer.status.prefect_reachable
        body = await run_in_threadpool(gateway_exposition, counts, reachable)
        return Response(body, media_type=EXPOSITION_CONTENT_TYPE)
