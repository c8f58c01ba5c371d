"""RabbitMQ for the Zocalo tests (tests/zocalo, tests/e2e/test_zocalo.py; the fixtures are
registered in tests/conftest.py): this machine's broker (127.0.0.1:5672, guest), a vhost
of this test session's own, and a Zocalo configuration file for dodal and zocalo.go.

dodal's ZocaloTrigger and `zocalo.go` always send to the queue `processing_recipe`, so the
session's vhost keeps their messages away from anyone else's. Results for dodal go to
the default vhost, on a queue named for a beamline no other test uses.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
TRIGGER_ENVIRONMENT = "zb-trigger"  # dodal's ZocaloTrigger and zocalo.go: the test vhost
RESULTS_ENVIRONMENT = "zb-results"  # dodal's ZocaloResults: the default vhost


def amqp_url(vhost: str) -> str:
    path = "%2F" if vhost == "/" else vhost
    return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{path}"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    """A vhost for this session (guest may use it); deleted afterwards."""
    vhost = f"bridge-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield vhost
    subprocess.Popen(["rabbitmqctl", "-q", "delete_vhost", vhost])


@pytest.fixture(scope="session")
def zocalo_config(rabbit_vhost: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Zocalo site configuration with the two environments, as a beamline's would be."""
    path = tmp_path_factory.mktemp("zocalo") / "zocalo.yml"
    plugin = "  plugin: pika\n  host: {h}\n  port: {p}\n  username: guest\n  password: guest\n"
    path.write_text(
        "version: 1\n"
        f"trigger-rabbit:\n{plugin.format(h=RABBIT_HOST, p=RABBIT_PORT)}  vhost: {rabbit_vhost}\n"
        f"results-rabbit:\n{plugin.format(h=RABBIT_HOST, p=RABBIT_PORT)}  vhost: /\n"
        "environments:\n"
        f"  {TRIGGER_ENVIRONMENT}:\n    plugins: [trigger-rabbit]\n"
        f"  {RESULTS_ENVIRONMENT}:\n    plugins: [results-rabbit]\n"
    )
    return path


@pytest.fixture
def channel(rabbit_vhost: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel on the session's vhost, to declare and inspect queues."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(rabbit_vhost)))
    yield connection.channel()
    connection.close()


def declare_with_dead_letters(channel: object, queue: str) -> str:
    """`queue` as Zocalo's RabbitMQ configuration declares it: durable, rejected messages
    dead-lettered to `dlq.<queue>`. Returns the dead-letter queue's name."""
    dlq = f"dlq.{queue}"
    channel.queue_declare(dlq, durable=True)  # type: ignore[attr-defined]
    channel.queue_declare(  # type: ignore[attr-defined]
        queue,
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
    )
    return dlq
