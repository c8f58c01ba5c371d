"""`prefect-beamline zocalo-bridge`: the bridge as a long-running process.

One process: the consumer on the main thread (one message at a time, acked after its
outbox commit) and the outbox drainer on a thread of its own, so the bridge delivers
its events to Prefect whether a gateway runs beside it or not (two drainers of one
outbox are harmless: a Prefect event id is derived from the event id, and the LIMS makes
one job per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prefect_beamline.gateway.emitter import Drainer
from prefect_beamline.gateway.handled import HandledPairs
from prefect_beamline.gateway.outbox import Outbox
from prefect_beamline.settings import BeamlineSettings, get_settings
from prefect_beamline.zocalo.bridge import ZocaloBridge
from prefect_beamline.zocalo.routing import RoutingTable, deployments_of_prefect_yaml
from prefect_beamline.zocalo.transport import display, ensure_queue, pika_transport

logger = logging.getLogger("prefect_beamline.zocalo")


@contextlib.contextmanager
def draining(drainer: Drainer) -> Iterator[Callable[[], None]]:
    """Run the drainer on a thread with its own event loop; yields its thread-safe wake."""
    loop = asyncio.new_event_loop()
    task: asyncio.Task[None] | None = None

    def run() -> None:
        nonlocal task
        asyncio.set_event_loop(loop)
        task = loop.create_task(drainer.run())
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, name="outbox-drainer", daemon=True)
    thread.start()
    try:

        def wake() -> None:
            loop.call_soon_threadsafe(drainer.wake)

        yield wake
    finally:
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=5)


def build_bridge(
    settings: BeamlineSettings, outbox: Outbox, api_url: str, wake: Callable[[], None]
) -> ZocaloBridge:
    from prefect_beamline.gateway.server import gateway_lims

    return ZocaloBridge(
        outbox=outbox,
        lookup=gateway_lims(settings).get_collection,
        routing=RoutingTable.with_deployments(
            settings.zocalo_recipes, deployments_of_prefect_yaml()
        ),
        handled=HandledPairs.from_prefect_yaml(),
        api_url=api_url,
        wake_drainer=wake,
    )


def run_bridge(settings: BeamlineSettings | None = None) -> None:
    """Consume until SIGTERM or SIGINT."""
    from prefect_beamline.gateway.server import configured_drainer, prefect_api_url

    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    url = settings.zocalo_rabbitmq_url.get_secret_value()
    queue_name = settings.zocalo_recipe_queue
    api_url = prefect_api_url()
    outbox = Outbox(settings.resolved_outbox_url)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with draining(configured_drainer(outbox, settings, api_url)) as wake:
        bridge = build_bridge(settings, outbox, api_url, wake)
        logger.info(
            "Zocalo bridge: %s queue %s; routes %s",
            display(url),
            queue_name,
            bridge.routing.known(),
        )

        def connect() -> Any:
            ensure_queue(url, queue_name)
            transport = pika_transport(url)
            transport.connect()
            return transport

        bridge.serve(connect, queue_name, stop)
