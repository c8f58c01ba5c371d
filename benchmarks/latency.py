"""Webhook-to-running latency of the dataset path, through `serve` and through the worker.

One embedded stack (Prefect server on SQLite unless PREFECT_API_URL names one, and the
gateway) runs two copies of the `mx-rotation` deployment of prefect.yaml, each with a
trigger that also matches a beamline name of its own:

- `bench-serve`, served by `prefect-beamline serve`;
- `bench-worker`, registered with `prefect deploy` on a work pool of type `beamline` and
  run by `prefect-beamline worker`.

The webhooks alternate between the two beamlines (serve, worker, serve, ...), one at a
time, each run finishing before the next webhook, so both paths see the same machine
state. A webhook's latency is from the HTTP POST to the flow run's RUNNING time as the
Prefect server recorded it (`start_time`), split at the run's `created` time. One
unmeasured webhook per path first warms both up. Target (issue 12): the worker's median
within 1.5x of serve's; the embedded default's p95 under 2 s.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.timing import report_from
from prefect_beamline.demo import daq_event, post_event
from prefect_beamline.deployments import find_prefect_yaml
from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.serving import DEFAULT_POLL_SECONDS, warm_start_enabled
from prefect_beamline.stack import (
    LocalStack,
    cli,
    embedded_stack,
    start_process,
    wait_for_deployments,
)
from prefect_beamline.techniques.mx.synth import write_mx_collection

TEMPLATE = "mx-rotation"
PATHS = ("serve", "worker")
VISITS = {"serve": "mx1-1", "worker": "mx2-1"}  # a LIMS visit is on one beamline
POOL = "bench-beamline"


def bench_deployment(path: str) -> dict[str, Any]:
    """prefect.yaml's mx-rotation entry, renamed `bench-<path>`, triggered by beamline
    `bench-<path>` only."""
    document = yaml.safe_load(find_prefect_yaml().read_text())
    entry = next(d for d in document["deployments"] if d["name"] == TEMPLATE)
    entry = copy.deepcopy(entry)
    entry["name"] = f"bench-{path}"
    entry["work_pool"] = {"name": POOL, "work_queue_name": "default"}
    for trigger in entry["triggers"]:
        trigger["name"] = f"bench-{path} on collection finished"
        trigger["match"]["beamline.name"] = f"bench-{path}"
    return dict(entry)


def write_prefect_file(folder: Path, path: str) -> Path:
    target = folder / f"prefect-{path}.yaml"
    document = {"name": f"bench-{path}", "deployments": [bench_deployment(path)]}
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def prefect(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}")


def start_both_paths(stack: LocalStack, folder: Path) -> None:
    """`serve` for bench-serve; a beamline work pool, its deployment and worker for
    bench-worker."""
    logs = folder / "logs"
    serve_file = write_prefect_file(folder, "serve")
    serve = start_process("serve", cli("serve", "--prefect-file", str(serve_file)), stack.env, logs)
    stack.processes.append(serve)
    prefect(stack.env, "work-pool", "create", POOL, "--type", "beamline")
    worker_file = write_prefect_file(folder, "worker")
    prefect(stack.env, "--no-prompt", "deploy", "--all", "--prefect-file", str(worker_file))
    wait_for_deployments(stack.api_url, ["bench-serve"], serve)
    worker = start_process("worker", cli("worker", "--pool", POOL), stack.env, logs)
    stack.processes.append(worker)


def server_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def one_webhook(stack: LocalStack, path: str, master: Path, collection_id: int) -> dict[str, float]:
    """POST one `finished` event for beamline bench-<path>; seconds to created and RUNNING."""
    event = daq_event(
        "mx", collection_id, master, beamline=f"bench-{path}", visit=VISITS[path],
        experiment_type="rotation",
    )  # fmt: skip
    posted = time.time()
    post_event(stack, event)
    deployment = f"mx-processing/bench-{path}"
    run = wait_for_new_flow_run(stack.api_url, deployment, collection_id, set(), 120)
    wait_for_state(stack.api_url, run.id, {"RUNNING", *TERMINAL_STATES}, 120)
    final = wait_for_state(stack.api_url, run.id, TERMINAL_STATES, 300)
    if final.state != "COMPLETED" or final.start_time is None or final.created is None:
        raise RuntimeError(f"bench-{path} run {run.id} ended {final.state}:\n{stack.logs()}")
    return {
        "created": server_time(final.created) - posted,
        "running": server_time(final.start_time) - posted,
    }


def summary(latencies: list[float]) -> tuple[float, float]:
    """Median and p95 (nearest rank) in seconds."""
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return round(statistics.median(ordered), 3), round(p95, 3)


def run(quick: bool = False) -> dict[str, Any]:
    n_per_path = 3 if quick else 20
    times: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as name:
        folder = Path(name)
        with embedded_stack(folder, serve=False) as stack:
            start_both_paths(stack, folder)
            master = write_mx_collection(folder / "data", n_images=2, seed=1).master_file
            for path in PATHS:  # warm-up, not counted
                one_webhook(stack, path, master, 499_000 + PATHS.index(path))
            for index in range(2 * n_per_path):
                path = PATHS[index % 2]
                times[path].append(one_webhook(stack, path, master, 500_000 + index))
    load_after = os.getloadavg()
    serve_running = [t["running"] for t in times["serve"]]
    worker_running = [t["running"] for t in times["worker"]]
    median_s, p95_s = summary(serve_running)
    worker_median_s, worker_p95_s = summary(worker_running)
    return {
        "benchmark": "latency",
        "n_webhooks_per_path": n_per_path,
        "order": "interleaved: serve, worker, serve, ... on one server",
        "median_s": median_s,
        "p95_s": p95_s,
        "worker_median_s": worker_median_s,
        "worker_p95_s": worker_p95_s,
        "worker_over_serve_median": round(worker_median_s / median_s, 2),
        "latencies_s": [round(x, 3) for x in serve_running],
        "worker_latencies_s": [round(x, 3) for x in worker_running],
        # Of which: webhook -> gateway -> event -> automation -> flow run created.
        "to_flow_run_created_s": [round(t["created"], 3) for t in times["serve"]],
        "worker_to_flow_run_created_s": [round(t["created"], 3) for t in times["worker"]],
        "load_avg": [round(x, 2) for x in (*load_before, *load_after)],
        "prefect_server": os.environ.get("PREFECT_API_URL") or "embedded (SQLite)",
        "poll_seconds": DEFAULT_POLL_SECONDS,
        "warm_start": warm_start_enabled(),
        "target_worker_over_serve_median": 1.5,
        "target_p95_s": 2.0,
    }


report = report_from(
    "webhook -> flow run RUNNING, {n_webhooks_per_path} webhooks per path ({order}): "
    "serve median {median_s} s, p95 {p95_s} s; worker median {worker_median_s} s, "
    "p95 {worker_p95_s} s ({worker_over_serve_median}x serve); load average "
    "(1, 5, 15 min) before and after {load_avg}"
)
