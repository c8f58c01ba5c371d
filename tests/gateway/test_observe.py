"""The gateway's /metrics and trace context: what an operator scrapes, who may scrape it,
and the DAQ's traceparent stored with the event it sends (issue 12)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prefect_beamline.events import TRACEPARENT_PATTERN
from prefect_beamline.gateway.emitter import Drainer, PrefectEmitter
from prefect_beamline.gateway.outbox import FAILED, Outbox
from prefect_beamline.settings import BeamlineSettings
from prefect_beamline.tracing import new_traceparent
from tests.gateway.test_app import (
    OPERATOR_TOKEN,
    TOKEN,
    event_body,
    make_app,
    make_settings,
    post,
    stored,
)

LOOPBACK = ("127.0.0.1", 50000)
DAQ_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def local_client(settings: BeamlineSettings) -> Iterator[TestClient]:
    """A client on this machine's loopback address, as a local Prometheus scrapes."""
    with TestClient(make_app(settings), client=LOOPBACK) as client:
        yield client


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_metrics_count_announcements_by_outcome_and_refusals_by_status(
    local_client: TestClient,
) -> None:
    before = scrape(local_client)
    assert post(local_client, event_body(event_id="m-1")).status_code == 202
    assert post(local_client, event_body(event_id="m-1")).status_code == 200
    assert (
        post(local_client, event_body(event_id="m-2"), headers={"Authorization": ""}).status_code
        == 401
    )
    assert post(local_client, event_body(event_id="m-3", collection_id=0)).status_code == 422
    after = scrape(local_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    accepted = "beamline_gateway_events_accepted_total"
    refused = "beamline_gateway_requests_refused_total"
    assert delta(accepted, source="daq", status="accepted") == 1
    assert delta(accepted, source="daq", status="duplicate") == 1
    assert delta(refused, endpoint="/api/v1/collections", status_code="401") == 1
    assert delta(refused, endpoint="/api/v1/collections", status_code="422") == 1
    # Prefect is unreachable in these tests: the accepted event is the backlog.
    assert value(after, "beamline_gateway_outbox_events", status="pending") == 1
    assert value(after, "beamline_gateway_outbox_events", status="failed") == 0
    assert value(after, "beamline_gateway_prefect_reachable") == 0


def test_metrics_from_another_host_are_refused_without_an_operator_token(
    tmp_path: Path,
) -> None:
    with TestClient(make_app(make_settings(tmp_path, operator_token=None))) as client:
        response = client.get("/metrics")  # TestClient's address is "testclient"
    assert response.status_code == 403
    assert "PREFECT_BEAMLINE_OPERATOR_TOKEN" in response.json()["detail"]


def test_metrics_from_another_host_need_the_operator_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    daq = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert daq.status_code == 403  # the DAQ's token may post, not read
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert answer.status_code == 200
    assert "beamline_gateway_outbox_events" in answer.text


def test_drainer_counts_emitted_and_dead_lettered_events_with_their_lag(
    settings: BeamlineSettings, local_client: TestClient
) -> None:
    assert post(local_client, event_body(event_id="good")).status_code == 202
    assert post(local_client, event_body(event_id="refused")).status_code == 202
    refused_id = str(
        next(r.event.prefect_event_id for r in stored(settings) if r.event_id == "refused")
    )

    def prefect(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)
        if any(event["id"] == refused_id for event in events):
            return httpx.Response(422, json={"detail": "refused"})
        return httpx.Response(204)

    before = scrape(local_client)
    outbox = Outbox(settings.resolved_outbox_url)
    drainer = Drainer(  # one refusal dead-letters the event
        outbox,
        PrefectEmitter("http://prefect/api", transport=httpx.MockTransport(prefect)),
        max_attempts=1,
    )

    async def drain() -> bool:
        async with drainer.emitter:
            return await drainer.drain_once()

    try:
        assert asyncio.run(drain())
    finally:
        outbox.close()
    after = scrape(local_client)

    def delta(name: str) -> float:
        return value(after, name, source="daq") - value(before, name, source="daq")

    assert delta("beamline_gateway_events_emitted_total") == 1
    assert delta("beamline_gateway_events_dead_lettered_total") == 1
    assert delta("beamline_gateway_emission_lag_seconds_count") == 1
    assert delta("beamline_gateway_emission_lag_seconds_sum") > 0
    assert value(after, "beamline_gateway_outbox_events", status=FAILED) == 1


def test_daq_traceparent_is_stored_with_the_event_and_sent_to_prefect(
    client: TestClient, settings: BeamlineSettings
) -> None:
    assert post(client, event_body(), headers={"traceparent": DAQ_TRACEPARENT}).status_code == 202
    (row,) = stored(settings)
    # Nothing records spans in this process: the DAQ's context passes through unchanged.
    assert row.event.traceparent == DAQ_TRACEPARENT
    prefect_event = row.event.to_prefect_event()
    assert prefect_event["payload"]["collection"]["traceparent"] == DAQ_TRACEPARENT
    assert prefect_event["related"] == [
        {
            "prefect.resource.id": "beamline.trace.4bf92f3577b34da6a3ce929d0e0e4736",
            "prefect.resource.role": "trace",
        }
    ]


@pytest.mark.parametrize("header", [None, "not-a-traceparent"])
def test_announcement_without_a_valid_traceparent_starts_a_trace(
    client: TestClient, settings: BeamlineSettings, header: str | None
) -> None:
    headers = {"traceparent": header} if header else {}
    assert post(client, event_body(), headers=headers).status_code == 202
    (row,) = stored(settings)
    assert row.event.traceparent is not None
    assert re.fullmatch(TRACEPARENT_PATTERN, row.event.traceparent)


def test_new_traces_are_valid_and_distinct() -> None:
    made = [new_traceparent() for _ in range(1000)]
    assert all(re.fullmatch(TRACEPARENT_PATTERN, traceparent) for traceparent in made)
    assert len({traceparent.split("-")[1] for traceparent in made}) == len(made)


def test_traceparent_field_of_the_body_is_validated_and_kept(
    client: TestClient, settings: BeamlineSettings
) -> None:
    response = post(client, event_body(traceparent="00-xyz"))
    assert response.status_code == 422 and "traceparent" in response.text
    assert post(client, event_body(traceparent=DAQ_TRACEPARENT)).status_code == 202
    assert stored(settings)[0].event.traceparent == DAQ_TRACEPARENT
