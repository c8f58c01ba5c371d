"""A busy beamline: N small MX collections announced within a second, through the real stack.

One stack (the embedded one: Prefect server on SQLite; or, when
PREFECT_SERVER_DATABASE_CONNECTION_URL names a PostgreSQL database, the stack's own
Prefect server on it; or the server PREFECT_API_URL names) runs `prefect-beamline serve`
and the gateway. After one unmeasured warm-up collection:

- **serial**: a few of the collections one at a time, each finished before the next
  webhook (`serial_collections_per_min`);
- **burst**: N collections POSTed from N threads at once (all within a second): when the
  last flow run was created, when the last finished, the slowest run (created to end),
  and how many ProcessingJobs each collection got in the LIMS (exactly one);
- **chunk_overhead**: the flow's default chunk of 1 Mpixel frames (38 images, ~40 Mpixel)
  as a Prefect task inside a flow on the same server, over the same chunk's compute alone
  (interleaved, medians); `chunk_overhead_10` the same for a 10-image chunk. Measured
  first, on the idle stack.

Targets (issue 17): all_created_s <= 5 on PostgreSQL and <= 10 embedded;
collections_per_min >= 1.6 x serial on 2 cores; chunk_overhead <= 1.2; max_run_s <= 3 x
the median run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.timing import report_from
from prefect_beamline.demo import daq_event, post_event
from prefect_beamline.runs import TERMINAL_STATES, deployment_id
from prefect_beamline.stack import LocalStack, embedded_stack
from prefect_beamline.techniques.mx.synth import write_mx_collection

DEPLOYMENT = "mx-processing/mx-rotation"
FIRST_ID = 700_000_000
ONE_MPIXEL = (1030, 1030)


def server_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def runs_of(stack: LocalStack, collection_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The newest mx-rotation flow run of each of these collections, raw from the API."""
    body = {
        "deployments": {"id": {"any_": [deployment_id(stack.api_url, DEPLOYMENT)]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 200,
    }
    response = httpx.post(f"{stack.api_url}/flow_runs/filter", json=body, timeout=30.0)
    response.raise_for_status()
    found: dict[int, dict[str, Any]] = {}
    for run in response.json():
        collection_id = int(run["parameters"].get("collection_id", -1))
        if collection_id in collection_ids and collection_id not in found:
            found[collection_id] = run
    return found


def runs_ended_since(stack: LocalStack, since: float) -> int:
    """How many mx-rotation runs reached a final state after `since` (a count: cheap for
    the server being measured, where listing 30 runs with their parameters 4 times a
    second was not)."""
    body = {
        "deployments": {"id": {"any_": [deployment_id(stack.api_url, DEPLOYMENT)]}},
        "flow_runs": {
            "state": {"type": {"any_": sorted(TERMINAL_STATES)}},
            "end_time": {"after_": datetime.fromtimestamp(since, UTC).isoformat()},
        },
    }
    response = httpx.post(f"{stack.api_url}/flow_runs/count", json=body, timeout=30.0)
    response.raise_for_status()
    return int(response.json())


def wait_until_done(
    stack: LocalStack, collection_ids: set[int], timeout_s: float, since: float
) -> dict[int, dict[str, Any]]:
    """Poll until every collection's run is final (runs ended after `since`, counted);
    fail naming the ones that are not."""
    deadline = time.monotonic() + timeout_s
    runs: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        if runs_ended_since(stack, since) < len(collection_ids):
            time.sleep(0.25)
            continue
        runs = runs_of(stack, collection_ids)
        if len(runs) == len(collection_ids) and all(
            run["state_type"] in TERMINAL_STATES for run in runs.values()
        ):
            failed = {c: r["state_type"] for c, r in runs.items() if r["state_type"] != "COMPLETED"}
            if failed:
                raise RuntimeError(f"runs not COMPLETED: {failed}\n{stack.logs()}")
            return runs
        time.sleep(0.25)
    missing = sorted(collection_ids - set(runs))
    raise TimeoutError(
        f"after {timeout_s:.0f} s: no run for {missing}; states "
        f"{sorted(r['state_type'] for r in runs.values())}\n{stack.logs()}"
    )


def announce(stack: LocalStack, master: Path, collection_id: int) -> float:
    """POST a `finished` rotation collection; the time it was posted."""
    event = daq_event(
        "mx", collection_id, master, beamline="mx1", visit="mx1-1", experiment_type="rotation"
    )
    posted = time.time()
    post_event(stack, event)
    return posted


def serial(stack: LocalStack, masters: list[Path], first_id: int) -> float:
    """Collections per minute, one at a time (each finished before the next webhook)."""
    started = time.time()
    for index, master in enumerate(masters):
        posted = announce(stack, master, first_id + index)
        wait_until_done(stack, {first_id + index}, 300, since=posted)
    return 60.0 * len(masters) / (time.time() - started)


def burst(stack: LocalStack, masters: list[Path], first_id: int) -> dict[str, Any]:
    """All collections announced at once, from one thread each."""
    ids = [first_id + index for index in range(len(masters))]
    with ThreadPoolExecutor(len(masters)) as pool:
        posted = list(pool.map(lambda pair: announce(stack, *pair), zip(masters, ids, strict=True)))
    first_post = min(posted)
    runs = wait_until_done(stack, set(ids), 600, since=first_post)
    created = [server_time(run["created"]) - first_post for run in runs.values()]
    done = [server_time(run["end_time"]) - first_post for run in runs.values()]
    run_s = [server_time(run["end_time"]) - server_time(run["created"]) for run in runs.values()]
    lims = stack.lims
    try:
        jobs = [len(lims.jobs_for_collection(collection_id)) for collection_id in ids]
    finally:
        lims.close()
    return {
        "posted_within_s": round(max(posted) - first_post, 3),
        "all_created_s": round(max(created), 2),
        "created_s": sorted(round(x, 2) for x in created),
        "all_done_s": round(max(done), 2),
        "collections_per_min": round(60.0 * len(masters) / max(done), 2),
        "max_run_s": round(max(run_s), 2),
        "median_run_s": round(statistics.median(run_s), 2),
        "jobs_per_collection": sorted(set(jobs)),
        "jobs_per_collection_all_one": all(count == 1 for count in jobs),
    }


def chunk_overhead(stack: LocalStack, folder: Path, repeats: int) -> dict[str, float]:
    """Median Prefect chunk task time over the same chunk's compute alone (1 Mpixel):
    the chunk the flow makes by default (`chunk_overhead`), and a 10-image chunk, the
    size every collection had before chunks were sized by frame (`chunk_overhead_10`)."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from prefect_beamline.flows.mx import (
        MXParameters,
        data_signature,
        find_spots_in_images,
        images_per_chunk,
        spots_on_images,
    )
    from prefect_beamline.formats.shared import shared_reader

    parameters = MXParameters()
    default = images_per_chunk(parameters, ONE_MPIXEL)
    written = write_mx_collection(folder, n_images=default, shape=ONE_MPIXEL, seed=3)
    master = str(written.master_file)
    signature = data_signature(master)

    # As the flow runs it (cache key, stored result), but computed every time, as a chunk
    # is the first time it runs.
    task = find_spots_in_images.with_options(refresh_cache=True)
    times: dict[tuple[int, str], list[float]] = {}

    @flow(name="bench-chunk-overhead")
    def interleaved() -> None:
        """The chunk alone, then as a Prefect task, in turn, in one flow run."""
        with shared_reader(master, signature) as collection:  # as the flow run holds it
            for _ in range(repeats):
                for last in (default, 10):
                    started = time.perf_counter()
                    spots_on_images(collection, 1, last, parameters, 1)
                    times.setdefault((last, "alone"), []).append(time.perf_counter() - started)
                    started = time.perf_counter()
                    task(master, signature, 1, last, parameters)
                    times.setdefault((last, "task"), []).append(time.perf_counter() - started)

    storage = {PREFECT_API_URL: stack.api_url, PREFECT_LOCAL_STORAGE_PATH: folder / "results"}
    with temporary_settings(storage):
        interleaved()
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "chunk_images": default,
        "chunk_alone_ms": round(1000 * median[default, "alone"], 1),
        "chunk_task_ms": round(1000 * median[default, "task"], 1),
        "chunk_overhead": round(median[default, "task"] / median[default, "alone"], 3),
        "chunk_alone_10_ms": round(1000 * median[10, "alone"], 1),
        "chunk_task_10_ms": round(1000 * median[10, "task"], 1),
        "chunk_overhead_10": round(median[10, "task"] / median[10, "alone"], 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    n_collections = 4 if quick else 30
    n_serial = 2 if quick else 6
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as name:
        folder = Path(name)
        masters = [
            write_mx_collection(
                folder / "data" / f"c{index}", n_images=20, images_per_data_file=10, seed=index
            ).master_file
            for index in range(n_collections)
        ]
        with embedded_stack(folder) as stack:
            serial(stack, masters[:1], FIRST_ID - 1)  # warm-up, not counted
            # First, while the server is idle: after the burst it is still digesting the
            # burst's events for tens of seconds, which inflated the Prefect side.
            overhead = chunk_overhead(stack, folder / "chunk", 3 if quick else 9)
            serial_rate = serial(stack, masters[:n_serial], FIRST_ID)
            result = burst(stack, masters, FIRST_ID + 1000)
    load_after = os.getloadavg()
    return {
        "benchmark": "burst",
        "collections": n_collections,
        "images_per_collection": 20,
        **result,
        "serial_collections_per_min": round(serial_rate, 2),
        "burst_over_serial": round(result["collections_per_min"] / serial_rate, 2),
        **overhead,
        "prefect_server": os.environ.get("PREFECT_API_URL")
        or os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "embedded (SQLite)"),
        "cpu_count": os.cpu_count(),
        "load_avg": [round(x, 2) for x in (*load_before, *load_after)],
        "targets": {
            "all_created_s": "<= 5 (PostgreSQL), <= 10 (embedded)",
            "burst_over_serial": ">= 1.6",
            "chunk_overhead": "<= 1.2",
            "max_run_s": "<= 3 x median_run_s",
        },
    }


report = report_from(
    "{collections} collections announced within {posted_within_s} s on {prefect_server}: "
    "all runs created after {all_created_s} s, all done after {all_done_s} s "
    "({collections_per_min}/min against {serial_collections_per_min}/min one at a time, "
    "{burst_over_serial}x); runs median {median_run_s} s, max {max_run_s} s; one job per "
    "collection: {jobs_per_collection_all_one}; {chunk_images}-image chunk task {chunk_task_ms} ms "
    "against {chunk_alone_ms} ms alone ({chunk_overhead}x; 10 images: {chunk_task_10_ms} against "
    "{chunk_alone_10_ms} ms, {chunk_overhead_10}x); load average before/after {load_avg}"
)
