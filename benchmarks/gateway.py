"""Gateway throughput, latency, burst integrity and drain lag, against the embedded stack.

A real Prefect server (SQLite) and the gateway as `prefect-beamline gateway` runs it
(no runner: events reach Prefect, no flow runs start). The load comes from
`benchmarks/http_load.py` in a separate process, 64 keep-alive connections; `client`
names the load generator (`asyncio-http1`, a minimal HTTP/1.1 client costing ~40 us of
CPU a request; `GATEWAY_BENCH_CLIENT=httpx` for httpx.AsyncClient, ~1 ms a request):

1. burst: `burst_events` announcements by 64 closed-loop clients: `accepted_per_s`,
   `p50_ms`, `p99_ms`; then, once the drainer is idle, each accepted event is looked for
   in the outbox (`emitted`) and counted in Prefect's event store
   (`POST /api/events/count-by/event` on the burst's visit label): `burst_lost`,
   `burst_duplicated`;
2. drain lag: announcements offered at 500/s (open loop); `drain_lag_s` is the p99 of
   outbox `emitted_at - received_at` (Prefect acknowledged the POST carrying it);
3. the peer: Zocalo's transport (`benchmarks/zocalo_peer.py`) on RabbitMQ, same run.

`load_avg` is the 1-minute load average before and after: a shared machine's numbers
only compare under like load.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.http_load import RAW_CLIENT
from benchmarks.timing import report_from
from benchmarks.zocalo_peer import zocalo_per_s
from prefect_beamline.stack import LocalStack, embedded_stack

REPOSITORY = Path(__file__).resolve().parent.parent
CONCURRENCY = 64
DRAIN_RATE_PER_S = 500
DRAIN_WAIT_S = 300.0
CLIENT_VARIABLE = "GATEWAY_BENCH_CLIENT"


def _load(stack: LocalStack, **config: Any) -> dict[str, Any]:
    """Run the load generator in its own process; its JSON result."""
    config.update(
        gateway_url=stack.gateway_url,
        token=stack.gateway_token,
        data_root=str(stack.workdir / "data"),  # the stack's data root: paths must lie under it
        client=os.environ.get(CLIENT_VARIABLE, RAW_CLIENT),
    )
    with tempfile.TemporaryDirectory() as folder:
        config["result_file"] = str(Path(folder) / "result.json")
        subprocess.run(
            [sys.executable, "-m", "benchmarks.http_load", json.dumps(config)],
            cwd=REPOSITORY,
            check=True,
        )
        result: dict[str, Any] = json.loads(Path(config["result_file"]).read_text())
    return result


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _outbox_rows(stack: LocalStack, prefix: str) -> list[tuple[str, str, str, str | None]]:
    """(event_id, status, received_at, emitted_at) of the run's events, read-only."""
    path = stack.env["PREFECT_BEAMLINE_OUTBOX_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return connection.execute(
            "SELECT event_id, status, received_at, emitted_at FROM gateway_outbox "
            "WHERE event_id LIKE ?",
            (f"{prefix}-%",),
        ).fetchall()


def _wait_until_drained(stack: LocalStack, prefix: str) -> list[tuple[str, str, str, str | None]]:
    deadline = time.monotonic() + DRAIN_WAIT_S
    while True:
        rows = _outbox_rows(stack, prefix)
        if all(status != "pending" for _, status, _, _ in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _prefect_count(stack: LocalStack, visit: str, expected: int) -> int:
    """Events with the run's visit label in Prefect's store, once it stops growing."""
    seen, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{stack.api_url}/events/count-by/event",
            json={"filter": {"resource": {"labels": {"beamline.visit": visit}}}},
            timeout=30.0,
        )
        response.raise_for_status()
        count = sum(int(item["count"]) for item in response.json())
        if count != seen:
            seen, stable_since = count, time.monotonic()
        if count >= expected and time.monotonic() - stable_since > 1.0:
            break
        if time.monotonic() - stable_since > 15.0:
            break
        time.sleep(0.5)
    return seen


def _seconds(moment: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(moment).timestamp()


def _burst(stack: LocalStack, n: int) -> dict[str, Any]:
    prefix, visit = f"burst-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    result = _load(stack, n=n, concurrency=CONCURRENCY, prefix=prefix, visit=visit)
    accepted = {f"{prefix}-{index}" for index in result["accepted"]}
    rows = _wait_until_drained(stack, prefix)
    emitted = {event_id for event_id, status, _, _ in rows if status == "emitted"}
    in_prefect = _prefect_count(stack, visit, len(accepted))
    latencies = result["latencies_ms"]
    emitted_times = [_seconds(at) for _, status, _, at in rows if status == "emitted" and at]
    received_times = [_seconds(received_at) for _, _, received_at, _ in rows]
    drain_span_s = max(emitted_times, default=0.0) - min(received_times, default=0.0)
    return {
        "client": result["client"],
        "accepted_per_s": round(len(accepted) / result["wall_s"], 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "burst_events": n,
        "burst_accepted": len(accepted),
        "burst_statuses": dict(result["statuses"]),
        "burst_lost": len(accepted - emitted) + max(0, len(accepted) - in_prefect),
        "burst_duplicated": max(0, in_prefect - len(accepted)),
        "burst_in_prefect": in_prefect,
        # From the first event accepted to the last taken by Prefect: the drainer's pace
        # while the burst competes with it (it starved to ~43/s before issue 10).
        "burst_drained_per_s": round(len(emitted_times) / drain_span_s, 1)
        if drain_span_s
        else None,
    }


def _drain_lag(stack: LocalStack, n: int) -> dict[str, Any]:
    prefix, visit = f"lag-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    result = _load(
        stack, n=n, concurrency=CONCURRENCY, rate_per_s=DRAIN_RATE_PER_S, prefix=prefix, visit=visit
    )
    rows = _wait_until_drained(stack, prefix)
    lags = [
        _seconds(emitted_at) - _seconds(received_at)
        for _, status, received_at, emitted_at in rows
        if status == "emitted" and emitted_at is not None
    ]
    return {
        "drain_offered_per_s": DRAIN_RATE_PER_S,
        "drain_achieved_offer_per_s": round(n / result["wall_s"], 1),
        "drain_events": n,
        "drain_lag_s": round(_percentile(lags, 0.99), 3) if lags else None,
        "drain_lag_median_s": round(statistics.median(lags), 3) if lags else None,
        "drain_lag_max_s": round(max(lags), 3) if lags else None,
        "drain_p99_ms": round(_percentile(result["latencies_ms"], 0.99), 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    burst_events = 500 if quick else 10_000
    drain_events = 250 if quick else 10 * DRAIN_RATE_PER_S
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-gateway-") as folder,
        embedded_stack(Path(folder), serve=False) as stack,
    ):
        _load(stack, n=200, concurrency=CONCURRENCY, prefix="warm", visit="bench-warm")
        burst = _burst(stack, burst_events)
        lag = _drain_lag(stack, drain_events)
    peer = zocalo_per_s(500 if quick else 5_000)
    return {
        "benchmark": "gateway",
        "concurrency": CONCURRENCY,
        **burst,
        **lag,
        **peer,
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "targets": {"accepted_per_s": 1000, "p99_ms": 50, "drain_lag_s": 1.0},
    }


report = report_from(
    "gateway: {accepted_per_s} accepted/s at {concurrency} {client} clients (p50 {p50_ms} ms, "
    "p99 {p99_ms} ms); burst {burst_accepted}/{burst_events} accepted, {burst_lost} lost, "
    "{burst_duplicated} duplicated; drain lag p99 {drain_lag_s} s at {drain_offered_per_s}/s; "
    "zocalo {zocalo_per_s}/s; load average {load_avg}"
)
