"""An operator follows one collection: metrics of the gateway and the runner, and one trace
from the DAQ's webhook through the gateway, the Prefect event, the flow run and its tasks
to the LIMS job (issue 12)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefect_beamline.demo import post_event
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests import helpers
from tests.e2e.helpers import completed_run, final_run, next_collection_id

pytestmark = pytest.mark.e2e
ROTATION = "mx-processing/mx-rotation"
WAIT_S = 60.0


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus endpoint, by (name, labels)."""
    response = httpx.get(url, timeout=10.0)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    return helpers.eventually(check, what, timeout_s, poll_s=0.5)


def spans_of_trace(trace_file: Path, trace_id: str) -> list[dict[str, Any]]:
    if not trace_file.exists():
        return []
    spans = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
    return [s for s in spans if s["context"]["trace_id"] == f"0x{trace_id}"]


def announce_traced(stack: LocalStack, master: Path, collection_id: int, traceparent: str) -> str:
    """POST the `finished` event as a traced DAQ does: with a W3C traceparent header."""
    event = demo_event(master, collection_id, None)
    event = event.model_copy(update={"processing_parameters": {"images_per_chunk": 4}})
    post_event(stack, event, traceparent=traceparent)
    return event.event_id


def test_metrics_show_one_collection_accepted_emitted_completed_and_its_chunks(
    stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.runner_metrics_url is not None
    gateway_metrics = f"{stack.gateway_url}/metrics"
    gateway_before, runner_before = scrape(gateway_metrics), scrape(stack.runner_metrics_url)

    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=8, seed=31)
    daq_span = secrets.token_hex(8)
    announce_traced(
        stack, synthetic.master_file, collection_id, f"00-{secrets.token_hex(16)}-{daq_span}-01"
    )
    completed_run(stack, ROTATION, collection_id)

    gateway_after = scrape(gateway_metrics)
    daq = {"source": "daq"}
    for name, labels in [
        ("beamline_gateway_events_accepted_total", {**daq, "status": "accepted"}),
        ("beamline_gateway_events_emitted_total", daq),
        ("beamline_gateway_emission_lag_seconds_count", daq),
    ]:
        assert (
            sample(gateway_after, name, **labels) - sample(gateway_before, name, **labels) == 1
        ), name
    assert sample(gateway_after, "beamline_gateway_outbox_events", status="pending") == 0
    assert sample(gateway_after, "beamline_gateway_prefect_reachable") == 1

    completed = ("beamline_flow_runs_total", {"flow": "mx-processing", "state": "completed"})
    runner_after = eventually(
        lambda: (
            (s := scrape(stack.runner_metrics_url or ""))
            and sample(s, completed[0], **completed[1])
            > sample(runner_before, completed[0], **completed[1])
            and s
        ),
        "the completed run in the runner's metrics",
    )
    chunks = ("beamline_chunk_seconds_count", {"technique": "mx", "task": "find_spots_in_images"})
    assert (
        sample(runner_after, *chunks[:1], **chunks[1])
        - sample(runner_before, *chunks[:1], **chunks[1])
        == 2
    )
    started = {"flow": "mx-processing", "state": "started"}
    assert sample(runner_after, "beamline_flow_runs_total", **started) >= 1
    assert sample(runner_after, "beamline_chunk_seconds_sum", **chunks[1]) > 0


def test_one_trace_from_the_daq_webhook_to_the_lims_job(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.trace_file is not None
    trace_id, daq_span = secrets.token_hex(16), secrets.token_hex(8)
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=8, seed=37)
    event_id = announce_traced(
        stack, synthetic.master_file, collection_id, f"00-{trace_id}-{daq_span}-01"
    )
    completed_run(stack, ROTATION, collection_id)

    # The outbox row carries the trace.
    outbox = httpx.get(
        f"{stack.gateway_url}/api/v1/outbox",
        headers={"Authorization": f"Bearer {stack.operator_token}"},
        timeout=10.0,
    ).json()
    (row,) = [r for r in outbox if r["event_id"] == event_id]
    assert row["event"]["traceparent"].split("-")[1] == trace_id

    # So does the event Prefect stored, in its payload and as a related resource.
    body = {
        "filter": {
            "event": {"name": ["beamline.collection.finished"]},
            "resource": {"id": [f"beamline.collection.{collection_id}"]},
        },
        "limit": 5,
    }
    (prefect_event,) = eventually(
        lambda: httpx.post(f"{stack.api_url}/events/filter", json=body, timeout=10.0).json()[
            "events"
        ],
        "the collection's event in Prefect",
    )
    assert prefect_event["payload"]["collection"]["traceparent"].split("-")[1] == trace_id
    assert {
        "prefect.resource.id": f"beamline.trace.{trace_id}",
        "prefect.resource.role": "trace",
    } in prefect_event["related"]

    # The spans: DAQ -> gateway POST -> flow run -> (subflow ->) tasks, one trace.
    def flow_and_tasks() -> list[dict[str, Any]] | None:
        spans = spans_of_trace(stack.trace_file or Path(), trace_id)
        kinds = {s["attributes"].get("prefect.run.type") for s in spans}
        return spans if {"flow", "task"} <= kinds else None

    spans = eventually(flow_and_tasks, "flow and task spans in the trace file")
    parents = {s["context"]["span_id"]: s["parent_id"] for s in spans}

    def ancestors(span: dict[str, Any]) -> list[str]:
        chain, parent = [], span["parent_id"]
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = parents.get(parent)
        return chain

    (post,) = [s for s in spans if s["name"] == "POST /api/v1/collections"]
    assert post["parent_id"] == f"0x{daq_span}"  # the gateway continues the DAQ's span
    assert all(ancestors(s)[-1] == f"0x{daq_span}" for s in spans)  # one tree, rooted there
    (emitted,) = [s for s in spans if s["name"] == "outbox to Prefect"]
    assert post["context"]["span_id"] in ancestors(emitted)
    flows = [s for s in spans if s["attributes"].get("prefect.run.type") == "flow"]
    tasks = [s for s in spans if s["attributes"].get("prefect.run.type") == "task"]
    flow_ids = {s["context"]["span_id"] for s in flows}
    assert all(post["context"]["span_id"] in ancestors(s) for s in flows)
    assert all(flow_ids & set(ancestors(s)) for s in tasks)  # tasks are children of flows
    names = {s["name"].rsplit("-", 1)[0] for s in tasks}
    assert {"record_processing_job", "find-spots-1", "find-spots-5"} <= names, names

    # The LIMS job names the trace.
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert job.trace_id == trace_id


def test_failed_run_is_counted_as_failed(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.runner_metrics_url is not None
    failed = {"flow": "mx-processing", "state": "failed"}
    before = sample(scrape(stack.runner_metrics_url), "beamline_flow_runs_total", **failed)
    collection_id = next_collection_id()
    synthetic = write_mx_collection(tmp_path / "data", n_images=4, seed=41)
    broken = synthetic.data_files[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    announce_traced(
        stack,
        synthetic.master_file,
        collection_id,
        f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
    )
    assert final_run(stack, ROTATION, collection_id).state == "FAILED"
    eventually(
        lambda: (
            sample(scrape(stack.runner_metrics_url or ""), "beamline_flow_runs_total", **failed)
            == before + 1
        ),
        "the failed run in the runner's metrics",
    )
