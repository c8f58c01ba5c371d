"""Prometheus metrics of the gateway and of `prefect-beamline serve`, in one place.

Names and labels are defined here; the gateway, its drainer, the runner and the flows
call the small `record_*`/`observe_*` functions, so what a metric means is read in one
module. Docs: docs/operations.md, "Metrics and traces".

Two registries, two kinds of process:

- the **gateway** is one process: its counters live in memory (`GATEWAY_REGISTRY`); the
  outbox backlog and Prefect's reachability are read at scrape time
  (`gateway_exposition`), so the numbers are the outbox's, not a copy that can drift.
- **serve** starts every flow run in a child process (forked from a forkserver) that
  exits when the run ends. Counters incremented there would die with it, so the runner
  uses prometheus_client's multiprocess mode: every process (runner, forkserver
  children, spawned children) writes its samples to memory-mapped files in one folder
  (`PROMETHEUS_MULTIPROC_DIR`), and the runner's endpoint sums the folder at scrape time.
  Nothing has to be sent back to the parent and a run that crashes keeps what it
  recorded. The folder must be set before the children start (`serve_runner_metrics`).

Every runner metric has labels, so merely importing this module in a flow process
creates no sample files.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from prefect_beamline.tracing import record_emission_spans

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a few ms (Prefect up, drainer woken at once) to an hour (Prefect down).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Seconds per chunk task: a few frames (ms) to a whole tomogram slab (minutes).
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

# -- gateway ------------------------------------------------------------------------------

GATEWAY_REGISTRY = CollectorRegistry()
EVENTS_ACCEPTED = Counter(
    "beamline_gateway_events_accepted",
    "Announcements answered 202/200, by source (daq, zocalo, bluesky) and outcome "
    "(accepted, duplicate, skipped)",
    ["source", "status"],
    registry=GATEWAY_REGISTRY,
)
REQUESTS_REFUSED = Counter(
    "beamline_gateway_requests_refused",
    "Requests refused with a 4xx/5xx, by endpoint and HTTP status code",
    ["endpoint", "status_code"],
    registry=GATEWAY_REGISTRY,
)
EVENTS_EMITTED = Counter(
    "beamline_gateway_events_emitted",
    "Outbox events Prefect took, by source",
    ["source"],
    registry=GATEWAY_REGISTRY,
)
EVENTS_DEAD_LETTERED = Counter(
    "beamline_gateway_events_dead_lettered",
    "Outbox events Prefect refused for good (status failed, see `outbox list`), by source",
    ["source"],
    registry=GATEWAY_REGISTRY,
)
EMISSION_LAG = Histogram(
    "beamline_gateway_emission_lag_seconds",
    "Seconds from the gateway's 202 (outbox commit) to Prefect taking the event, by source",
    ["source"],
    buckets=LAG_BUCKETS,
    registry=GATEWAY_REGISTRY,
)


def record_accepted(source: str, status: str) -> None:
    """An announcement stored (`accepted`, `skipped`) or recognised (`duplicate`)."""
    EVENTS_ACCEPTED.labels(source=source, status=status).inc()


def record_refused(endpoint: str, status_code: int) -> None:
    """A request refused: bad token, body, JSON, fields, unknown collection, outbox down."""
    REQUESTS_REFUSED.labels(endpoint=endpoint, status_code=str(status_code)).inc()


def observe_emission_lag(source: str, received_at: datetime, emitted_at: datetime) -> None:
    """One event reached Prefect: count it and how long it waited in the outbox."""
    EVENTS_EMITTED.labels(source=source).inc()
    lag_s = (emitted_at - received_at).total_seconds()
    EMISSION_LAG.labels(source=source).observe(max(lag_s, 0.0))


def record_emitted(rows: Iterable[Any]) -> None:
    """Outbox rows (`StoredEvent`) Prefect just took: counts and lags, and their spans."""
    now = datetime.now(UTC)
    emitted = list(rows)
    for row in emitted:
        observe_emission_lag(row.source, row.received_at, now)
    record_emission_spans(emitted, now)


def record_dead_lettered(rows: Iterable[Any]) -> None:
    """Outbox rows (`StoredEvent`) Prefect refused for good: moved to `failed`."""
    for row in rows:
        EVENTS_DEAD_LETTERED.labels(source=row.source).inc()


class _GatewayState(Collector):
    """Gauges read at scrape time: the outbox by status and whether Prefect answers."""

    def __init__(self, outbox_counts: Mapping[str, int], prefect_reachable: bool | None) -> None:
        self.outbox_counts = outbox_counts
        self.prefect_reachable = prefect_reachable

    def collect(self) -> Iterator[Metric]:
        outbox = GaugeMetricFamily(
            "beamline_gateway_outbox_events",
            "Events in the outbox by status: pending (backlog to Prefect), emitted, "
            "failed (dead-lettered), skipped",
            labels=["status"],
        )
        for status, count in self.outbox_counts.items():
            outbox.add_metric([status], count)
        yield outbox
        if self.prefect_reachable is not None:
            yield GaugeMetricFamily(
                "beamline_gateway_prefect_reachable",
                "1 when Prefect's API answered /health at the scrape (or at the last "
                "emission), else 0",
                value=1.0 if self.prefect_reachable else 0.0,
            )


def gateway_exposition(outbox_counts: Mapping[str, int], prefect_reachable: bool | None) -> bytes:
    """The gateway's metrics in Prometheus text format."""
    state = CollectorRegistry()
    state.register(_GatewayState(outbox_counts, prefect_reachable))
    return generate_latest(GATEWAY_REGISTRY) + generate_latest(state)


# -- runner (`prefect-beamline serve`) and the flow-run processes it starts ----------------

RUNNER_REGISTRY = CollectorRegistry()
FLOW_RUNS = Counter(
    "beamline_flow_runs",
    "Flow runs by flow and state: started, completed, failed, crashed, cancelled",
    ["flow", "state"],
    registry=RUNNER_REGISTRY,
)
CHUNK_SECONDS = Histogram(
    "beamline_chunk_seconds",
    "Wall time of one chunk task (frames, rows, a movie), by technique and task",
    ["technique", "task"],
    buckets=CHUNK_BUCKETS,
    registry=RUNNER_REGISTRY,
)
LIVE_BACKLOG = Gauge(
    "beamline_live_backlog_chunks",
    "Chunks announced on the live path and not yet processed, by technique",
    ["technique"],
    registry=RUNNER_REGISTRY,
    multiprocess_mode="livesum",
)

P = ParamSpec("P")
R = TypeVar("R")
FlowHook = Callable[[Any, Any, Any], None]


def record_run_state(flow_name: str, state: str) -> None:
    FLOW_RUNS.labels(flow=flow_name, state=state).inc()


def _state_hook(state: str) -> FlowHook:
    def hook(flow: Any, flow_run: Any, run_state: Any) -> None:
        record_run_state(flow.name, state)

    hook.__name__ = f"count_{state}_run"
    return hook


F = TypeVar("F")


def count_run_states(flow: F) -> F:
    """`flow` with state hooks that count its runs by state in `beamline_flow_runs`.

    Crashed and cancelled hooks of a served run are run by the runner (the run's process
    may be gone), which is why the runner writes to the multiprocess folder too.
    """
    hooks: Any = flow
    hooks.on_running_hooks.append(_state_hook("started"))
    hooks.on_completion_hooks.append(_state_hook("completed"))
    hooks.on_failure_hooks.append(_state_hook("failed"))
    hooks.on_crashed_hooks.append(_state_hook("crashed"))
    hooks.on_cancellation_hooks.append(_state_hook("cancelled"))
    return flow


@contextmanager
def chunk_timer(technique: str, task: str) -> Iterator[None]:
    """Time one chunk into `beamline_chunk_seconds` (failed chunks too)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        CHUNK_SECONDS.labels(technique=technique, task=task).observe(time.perf_counter() - started)


def timed_chunk(technique: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator under `@task` for a technique's chunk task: each call is timed.

    Recorded in the process that runs the chunk: the flow run's process for threads; a
    Dask worker's process when the Compute block names a cluster (not scraped by serve).
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @wraps(function)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with chunk_timer(technique, function.__name__):
                return function(*args, **kwargs)

        return timed

    return decorate


def set_live_backlog(technique: str, chunks: int) -> None:
    """How many frames the live path accepted and has not analysed yet (on the live
    path a chunk is one frame: `prefect_beamline.live.analysis`)."""
    LIVE_BACKLOG.labels(technique=technique).set(chunks)


LIVE_LAG = Histogram(
    "beamline_live_lag_seconds",
    "Live path: frame written or received -> its result ready, by technique",
    ["technique"],
    buckets=LAG_BUCKETS,
    registry=RUNNER_REGISTRY,
)


def observe_live_result(technique: str, lag_s: float, backlog: int) -> None:
    """One live result: its lag behind its frame, and the backlog left."""
    LIVE_LAG.labels(technique=technique).observe(lag_s)
    LIVE_BACKLOG.labels(technique=technique).set(backlog)


def use_multiprocess_folder(folder: Path | None = None) -> Path:
    """Make this process and every process it starts afterwards write runner metrics to
    `folder` (default: `$PROMETHEUS_MULTIPROC_DIR`, else a new temporary folder).

    prometheus_client picks its value store when first imported, which Prefect does long
    before `serve` runs; the store is switched here, before the first sample exists. A
    folder named by the operator is emptied: samples of an earlier runner would be summed.
    """
    chosen = folder or (
        Path(os.environ[MULTIPROC_VARIABLE])
        if os.environ.get(MULTIPROC_VARIABLE)
        else Path(tempfile.mkdtemp(prefix="prefect-beamline-metrics-"))
    )
    chosen.mkdir(parents=True, exist_ok=True)
    for stale in chosen.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_VARIABLE] = str(chosen)
    values.ValueClass = values.get_value_class()
    return chosen


def serve_runner_metrics(host: str, port: int, folder: Path | None = None) -> Path:
    """Expose the runner's metrics (summed over every flow-run process) on host:port.

    Call before the forkserver or any flow-run process starts. Returns the folder.
    """
    chosen = use_multiprocess_folder(folder)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(chosen))
    start_http_server(port, addr=host, registry=registry)
    return chosen


def start_runner_metrics(port: int | None, host: str) -> Path | None:
    """`serve_runner_metrics` when a port is configured (PREFECT_BEAMLINE_METRICS_PORT);
    prints where. None (nothing exposed, nothing written) otherwise."""
    if port is None:
        return None
    try:
        folder = serve_runner_metrics(host, port)
    except OSError as error:
        raise RuntimeError(
            f"cannot expose metrics on {host}:{port} (PREFECT_BEAMLINE_METRICS_HOST/_PORT): "
            f"{error.strerror or error}"
        ) from error
    print(f"metrics on http://{host}:{port}/metrics (samples in {folder})")
    return folder
