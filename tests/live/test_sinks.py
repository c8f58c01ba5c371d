"""The results stream publisher against a gateway's body limit."""

from __future__ import annotations

import json

import httpx

from prefect_beamline.live.sinks import ResultsStreamPublisher

LIMIT = 1_048_576  # the gateway's default PREFECT_BEAMLINE_GATEWAY_MAX_BODY_BYTES


def test_a_backlog_larger_than_the_gateways_body_limit_is_sent_whole_in_order() -> None:
    """A backlog (the gateway was down for a while, or serial chunks with their radial
    profiles) went out as one POST: over the limit the gateway answers 413 and the
    publisher retried that same body for ever."""
    bodies: list[int] = []
    received: list[int] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if len(request.content) > LIMIT:
            return httpx.Response(413)
        bodies.append(len(request.content))
        received.extend(message["n"] for message in json.loads(request.content))
        return httpx.Response(202, json={"last_id": len(received)})

    publisher = ResultsStreamPublisher(
        "http://gateway", 7, "token", transport=httpx.MockTransport(gateway), interval_s=0.2
    )
    profile = [0.123456789] * 1000  # ~13 kB per message, as a serial chunk's profile
    for n in range(300):  # all but the first wait for the next batch: one backlog
        publisher.publish({"type": "chunk", "n": n, "profile": profile})
    publisher.close()  # sends what is pending and stops
    assert received == list(range(300))
    assert len(bodies) > 1 and max(bodies) <= LIMIT
