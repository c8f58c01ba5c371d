"""Entry points of the gateway: the app from settings, uvicorn, and the outbox tools the
CLI wires up (`prefect-beamline gateway`, `prefect-beamline outbox list|requeue`)."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from prefect_beamline.gateway.app import build_app
from prefect_beamline.gateway.auth import GatewayAccess
from prefect_beamline.gateway.emitter import Backoff, Drainer, PrefectEmitter, prefect_auth_headers
from prefect_beamline.gateway.mapping import CollectionLookup
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.settings import BeamlineSettings, get_settings
from prefect_beamline.tracing import configure_tracing


def prefect_api_url() -> str:
    """PREFECT_API_URL as Prefect resolves it (environment or profile)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError(
            "PREFECT_API_URL is not set: the gateway emits to a Prefect server "
            "(e.g. PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    return str(url)


def lims_lookup(settings: BeamlineSettings) -> CollectionLookup:
    """`Lims.get_collection` of the configured LIMS; an embedded SQLite LIMS gets its
    tables created (a production ISPyB is left alone)."""
    from prefect_beamline.lims import Lims

    lims = Lims(settings.resolved_lims_url)
    if make_url(settings.resolved_lims_url).get_backend_name() == "sqlite":
        lims.create_schema()
    return lims.get_collection


def create_app(
    settings: BeamlineSettings | None = None,
    *,
    lookup: CollectionLookup | None = None,
    api_url: str | None = None,
    backoff: Backoff | None = None,
    host: str | None = None,
) -> FastAPI:
    """The gateway as configured: outbox at `settings.resolved_outbox_url`, events to
    `api_url` (default PREFECT_API_URL), Zocalo ids resolved by `lookup` (default the LIMS).

    Its authentication is checked first, for `host` (default `settings.gateway_host`):
    GatewayConfigError before anything is opened or created.
    """
    settings = settings or get_settings()
    access = GatewayAccess.from_settings(settings, host or settings.gateway_host)
    settings.home.mkdir(parents=True, exist_ok=True)
    configure_tracing("prefect-beamline-gateway")
    outbox = Outbox(settings.resolved_outbox_url)
    emitter = PrefectEmitter(api_url or prefect_api_url(), headers=prefect_auth_headers())
    return build_app(
        settings=settings,
        outbox=outbox,
        drainer=Drainer(outbox, emitter, backoff=backoff),
        lookup=lookup or lims_lookup(settings),
        access=access,
    )


def run_gateway(host: str, port: int, settings: BeamlineSettings | None = None) -> None:
    """Serve the gateway with uvicorn until interrupted; GatewayConfigError, before it
    listens, when nothing would authenticate the DAQ on `host`."""
    uvicorn.run(create_app(settings, host=host), host=host, port=port, log_level="info")


def outbox_list(status: str | None = None) -> list[dict[str, Any]]:
    """Stored events (of one status: pending, emitted, failed, skipped), oldest first."""
    outbox = Outbox(get_settings().resolved_outbox_url)
    try:
        return [row.as_dict() for row in outbox.list(status)]
    finally:
        outbox.close()


def outbox_requeue(event_ids: list[str] | None = None) -> int:
    """Make the named events (default: every failed one) pending again; returns how many.
    A running gateway emits them within its idle poll (5 s)."""
    outbox = Outbox(get_settings().resolved_outbox_url)
    try:
        return outbox.requeue(event_ids)
    finally:
        outbox.close()
