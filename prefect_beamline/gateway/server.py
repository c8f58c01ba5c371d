"""Entry points of the gateway: the app from settings, uvicorn, and the outbox tools the
CLI wires up (`prefect-beamline gateway`, `prefect-beamline outbox list|show|requeue|discard`)."""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from prefect_beamline.gateway.app import build_app
from prefect_beamline.gateway.auth import GatewayAccess
from prefect_beamline.gateway.emitter import (
    EVENT_BACKOFF,
    Backoff,
    Drainer,
    PrefectEmitter,
    prefect_auth_headers,
)
from prefect_beamline.gateway.mapping import CollectionLookup
from prefect_beamline.gateway.outbox import Outbox, Page
from prefect_beamline.settings import BeamlineSettings, get_settings
from prefect_beamline.tracing import configure_tracing

if TYPE_CHECKING:
    from prefect_beamline.lims import Lims


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


def gateway_lims(settings: BeamlineSettings) -> Lims:
    """The configured LIMS; an embedded SQLite LIMS gets its tables created (a
    production ISPyB is left alone)."""
    from prefect_beamline.lims import Lims

    lims = Lims(settings.resolved_lims_url)
    if make_url(settings.resolved_lims_url).get_backend_name() == "sqlite":
        lims.create_schema()
    return lims


def lims_lookup(settings: BeamlineSettings) -> CollectionLookup:
    """`Lims.get_collection` of the configured LIMS."""
    return gateway_lims(settings).get_collection


def create_app(
    settings: BeamlineSettings | None = None,
    *,
    lookup: CollectionLookup | None = None,
    api_url: str | None = None,
    backoff: Backoff | None = None,
    host: str | None = None,
    event_backoff: Backoff = EVENT_BACKOFF,
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
    lims = gateway_lims(settings)
    return build_app(
        settings=settings,
        outbox=outbox,
        drainer=configured_drainer(outbox, settings, api_url, backoff, event_backoff),
        lookup=lookup or lims.get_collection,
        access=access,
        lims=lims,
    )


def configured_drainer(
    outbox: Outbox,
    settings: BeamlineSettings,
    api_url: str | None = None,
    backoff: Backoff | None = None,
    event_backoff: Backoff = EVENT_BACKOFF,
) -> Drainer:
    """The drainer of `outbox` to `api_url` (default PREFECT_API_URL), as configured."""
    emitter = PrefectEmitter(api_url or prefect_api_url(), headers=prefect_auth_headers())
    return Drainer(
        outbox,
        emitter,
        backoff=backoff,
        event_backoff=event_backoff,
        max_attempts=settings.outbox_max_attempts,
        retention=timedelta(hours=settings.outbox_retention_hours),
    )


def uvicorn_options() -> dict[str, Any]:
    """uvloop and httptools when installed (less CPU per request than asyncio and h11),
    and no per-request access log line (the gateway logs refusals and failures)."""
    installed = importlib.util.find_spec
    return {
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "http": "httptools" if installed("httptools") else "h11",
        "access_log": False,
        "log_level": "info",
    }


def run_gateway(host: str, port: int, settings: BeamlineSettings | None = None) -> None:
    """Serve the gateway with uvicorn until interrupted; GatewayConfigError, before it
    listens, when nothing would authenticate the DAQ on `host`."""
    app = create_app(settings, host=host)
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight, a full collection takes ~1 ms instead of ~100 ms, during which
    # every request waited (a p99 of 150 ms at 64 clients).
    gc.freeze()
    uvicorn.run(app, host=host, port=port, **uvicorn_options())


T = TypeVar("T")


def _with_outbox(action: Callable[[Outbox], T]) -> T:
    """`action` on the configured outbox, closed afterwards."""
    outbox = Outbox(get_settings().resolved_outbox_url)
    try:
        return action(outbox)
    finally:
        outbox.close()


def outbox_list(status: str | None = None, limit: int = 100, after: int = 0) -> Page:
    """One page of stored events (of one status: pending, emitted, failed, skipped),
    oldest first, after sequence `after`."""
    return _with_outbox(lambda outbox: outbox.page(status, limit, after))


def outbox_show(event_id: str) -> dict[str, Any] | None:
    """Everything stored about one event, raw body included."""
    row = _with_outbox(lambda outbox: outbox.get(event_id))
    return row.as_dict() if row is not None else None


def outbox_requeue(event_ids: list[str] | None = None) -> int:
    """Make the named events (default: every failed one) pending again, attempts reset;
    returns how many. A running gateway emits them within its idle poll (5 s)."""
    return _with_outbox(lambda outbox: outbox.requeue(event_ids))


def outbox_discard(event_ids: list[str] | None = None) -> int:
    """Delete the named dead letters (default: every failed event); returns how many."""
    return _with_outbox(lambda outbox: outbox.discard(event_ids))
