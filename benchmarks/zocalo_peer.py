"""The peer of the gateway benchmark: Zocalo's message path, measured in the same run.

Zocalo moves a trigger through RabbitMQ with the `workflows` package's PikaTransport: the
DAQ sends a persistent message to a queue, a service consumes it (acknowledged), forwards
it to the next step's queue, and the next service consumes it. This is that two-step
chain, send -> consume -> forward -> consume, with 64 sender threads (as the gateway gets
64 clients) and each service in its own process. Recipe parsing and ISPyB lookups are
left out, so the number is an upper bound of Zocalo's own. Needs RabbitMQ on
127.0.0.1:5672 (guest/guest) and `workflows` installed; otherwise None with the reason.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from typing import Any

RABBIT = ("127.0.0.1", 5672)
SENDERS = 64
TIMEOUT_S = 300.0


def _transport() -> Any:
    from workflows.transport.pika_transport import PikaTransport

    transport = PikaTransport()
    transport.connect()
    return transport


def _serve(source: str, target: str | None, n: int, ready: Queue[str], done: Queue[float]) -> None:
    """A service: consume from `source`; forward each message to `target` (step 1) or
    count it and report when the n-th arrived (step 2); acknowledge after.

    As in a workflows CommonService, messages are handled on the service's main thread:
    the transport's pika thread only hands them over (sending from it would deadlock).
    """
    transport = _transport()
    inbox: queue.Queue[tuple[dict[str, Any], Any]] = queue.Queue()
    transport.subscribe(
        source,
        lambda header, message: inbox.put((header, message)),
        acknowledgement=True,
        prefetch_count=64,
    )
    ready.put(source)
    received = 0
    while True:
        header, message = inbox.get()
        if target is not None:
            transport.send(target, message)
        transport.ack(header)
        received += 1
        if target is None and received == n:
            done.put(time.time())


def _declare(queues: list[str], delete: bool = False) -> None:
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters(*RABBIT))
    try:
        channel = connection.channel()
        for queue in queues:
            if delete:
                channel.queue_delete(queue)
            else:
                channel.queue_declare(queue, durable=True)
    finally:
        connection.close()


def zocalo_per_s(n: int) -> dict[str, Any]:
    """Messages per second through the two-step chain, or None and why not."""
    try:
        with socket.create_connection(RABBIT, timeout=2.0):
            pass
    except OSError as error:
        return {"zocalo_per_s": None, "zocalo_note": f"RabbitMQ not reachable: {error}"}
    try:
        import workflows.transport.pika_transport  # noqa: F401
    except ImportError as error:
        return {"zocalo_per_s": None, "zocalo_note": f"workflows not installed: {error}"}
    run = uuid.uuid4().hex[:8]
    step1, step2 = f"bench.zocalo.{run}.step1", f"bench.zocalo.{run}.step2"
    _declare([step1, step2])
    context = multiprocessing.get_context("spawn")
    ready: Queue[str] = context.Queue()
    done: Queue[float] = context.Queue()
    services = [
        context.Process(target=_serve, args=(step1, step2, n, ready, done), daemon=True),
        context.Process(target=_serve, args=(step2, None, n, ready, done), daemon=True),
    ]
    try:
        for service in services:
            service.start()
        for _ in services:
            ready.get(timeout=60)
        sender = _transport()
        message = {"recipes": ["bench"], "parameters": {"ispyb_dcid": 1, "event": "end"}}
        started = time.time()
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(lambda _: sender.send(step1, message), range(n)))
        finished = done.get(timeout=TIMEOUT_S)
        sender.disconnect()
    finally:
        for service in services:
            service.terminate()
            service.join(5)
        _declare([step1, step2], delete=True)
    return {
        "zocalo_per_s": round(n / (finished - started), 1),
        "zocalo_messages": n,
        "zocalo_note": "workflows PikaTransport, persistent messages, two steps "
        "(send -> consume -> forward -> consume), acknowledged; no recipe parsing",
    }
