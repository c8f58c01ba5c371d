"""Entry points of the gateway: the app from settings, uvicorn, and outbox tools."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from prefect_beamline.gateway.app import create_app
from prefect_beamline.gateway.mapping import CollectionLookup
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.lims import Lims
from prefect_beamline.settings import BeamlineSettings, get_settings


def prefect_api_url() -> str:
    """PREFECT_API_URL as Prefect resolves it (profile or environment)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set: the gateway needs a Prefect server")
    return str(url)


def app_from_settings(
    settings: BeamlineSettings | None = None,
    *,
    api_url: str | None = None,
    lookup: CollectionLookup | None = None,
) -> FastAPI:
    """The gateway as configured by the environment (LIMS lookup for Zocalo messages)."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if lookup is None:
        lims = Lims(settings.resolved_lims_url)
        lims.create_schema()
        lookup = lims.get_collection
    return create_app(
        settings, Outbox(settings.resolved_outbox_url), api_url or prefect_api_url(), lookup
    )


def run_gateway(host: str, port: int, settings: BeamlineSettings | None = None) -> None:
    """Serve the gateway with uvicorn until interrupted."""
    uvicorn.run(app_from_settings(settings), host=host, port=port, log_level="info")


def outbox_list(status: str | None = None) -> list[dict[str, Any]]:
    """Stored events (optionally of one status), oldest first."""
    return [row.as_dict() for row in Outbox(get_settings().resolved_outbox_url).list(status)]


def outbox_requeue(event_ids: list[str] | None = None) -> int:
    """Send failed events (or the named ones) again; a running gateway picks them up."""
    return Outbox(get_settings().resolved_outbox_url).requeue(event_ids)
