"""python-workflows' PikaTransport, configured from one AMQP URL of ours.

Zocalo configures PikaTransport through class-wide defaults (a site's zocalo
configuration file); this sets the effective configuration on one instance instead, so
a process can talk to two brokers (or a test to its own vhost) without changing anyone's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from workflows.transport.pika_transport import PikaTransport

MISSING_EXTRA = (
    "the Zocalo bridge needs python-workflows and pika: pip install 'prefect-beamline[zocalo]'"
)


def transport_options(url: str) -> dict[str, str]:
    """PikaTransport's options (`--rabbit-host`, ...) for amqp://user:password@host:port/vhost.

    The vhost is the percent-decoded path without its leading slash; empty is "/".
    """
    parts = urlsplit(url)
    if parts.scheme != "amqp" or not parts.hostname:
        raise ValueError(
            "zocalo_rabbitmq_url must be amqp://user:password@host:port/vhost, "
            f"got {display(url)!r}"
        )
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    return {
        "--rabbit-host": parts.hostname,
        "--rabbit-port": str(parts.port or 5672),
        "--rabbit-user": unquote(parts.username or "guest"),
        "--rabbit-pass": unquote(parts.password or "guest"),
        "--rabbit-vhost": vhost or "/",
    }


def display(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def pika_transport(url: str) -> PikaTransport:
    """An unconnected PikaTransport for `url`."""
    try:
        from workflows.transport.pika_transport import PikaTransport
    except ImportError as error:
        raise RuntimeError(MISSING_EXTRA) from error
    transport = PikaTransport()
    transport.config = transport_options(url)  # this instance only, not the class's
    return transport


def ensure_queue(url: str, name: str) -> None:
    """Declare `name` durable unless it exists (a facility's RabbitMQ configuration, with
    its dead-letter exchange and queue type, is left as it is)."""
    import pika
    from pika.exceptions import ChannelClosedByBroker

    options = transport_options(url)
    parameters = pika.ConnectionParameters(
        host=options["--rabbit-host"],
        port=int(options["--rabbit-port"]),
        virtual_host=options["--rabbit-vhost"],
        credentials=pika.PlainCredentials(options["--rabbit-user"], options["--rabbit-pass"]),
    )
    connection = pika.BlockingConnection(parameters)
    try:
        try:
            connection.channel().queue_declare(name, passive=True)
        except ChannelClosedByBroker:
            connection.channel().queue_declare(name, durable=True)
    finally:
        connection.close()
