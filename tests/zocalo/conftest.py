"""The Zocalo tests' RabbitMQ channel fixture (tests/rabbit.py)."""

from tests.rabbit import channel  # noqa: F401
