"""Webhook-to-running latency of the embedded stack (dataset path).

Sends N webhooks, one at a time, to the gateway of a freshly started embedded stack
(Prefect server on SQLite, `prefect-beamline serve`, gateway) and measures, for each,
the time from the HTTP POST to the automation-created flow run being RUNNING. Each run
is left to finish before the next webhook, so the number is the quiet-system latency.
Target (issue 2): median under 2 s.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import report_from
from prefect_beamline.demo import post_event
from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.serving import DEFAULT_POLL_SECONDS, warm_start_enabled
from prefect_beamline.stack import embedded_stack
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection

DEPLOYMENT = "mx-processing/mx-rotation"


def run(quick: bool = False) -> dict[str, Any]:
    n_webhooks = 3 if quick else 20
    latencies: list[float] = []
    to_created: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        workdir = Path(folder)
        with embedded_stack(workdir) as stack:
            synthetic = write_mx_collection(workdir / "data", n_images=2, seed=1)
            for index in range(n_webhooks):
                collection_id = 500_000 + index
                event = demo_event(synthetic.master_file, collection_id, None)
                posted = time.monotonic()
                post_event(stack, event)
                flow_run = wait_for_new_flow_run(
                    stack.api_url, DEPLOYMENT, collection_id, set(), 120
                )
                to_created.append(time.monotonic() - posted)
                wait_for_state(
                    stack.api_url, flow_run.id, {"RUNNING", *TERMINAL_STATES}, 120, poll_s=0.02
                )
                latencies.append(time.monotonic() - posted)
                wait_for_state(stack.api_url, flow_run.id, TERMINAL_STATES, 300)
    ordered = sorted(latencies)
    return {
        "benchmark": "latency",
        "n_webhooks": n_webhooks,
        "median_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
        "latencies_s": [round(x, 3) for x in latencies],
        # Of which: webhook -> gateway -> event -> automation -> flow run created.
        "to_flow_run_created_median_s": round(statistics.median(to_created), 3),
        "to_flow_run_created_s": [round(x, 3) for x in to_created],
        "serve_poll_seconds": DEFAULT_POLL_SECONDS,
        "warm_start": warm_start_enabled(),
        "target_median_s": 2.0,
    }


report = report_from(
    "webhook -> flow run RUNNING over {n_webhooks} webhooks: median {median_s} s, "
    "p95 {p95_s} s (min {min_s}, max {max_s}); target median < 2 s"
)
