"""The embedded Prefect server (SQLite) lets concurrent writers wait for the lock: no
"database is locked" 503, which Prefect's clients retry only after 2 s, then 4 s."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from prefect_beamline.stack import free_port, stack_environment, start_prefect_server

WRITERS = 8
RUNS_PER_WRITER = 12


NO_ANSWER = 0  # the server dropped the connection (an unhandled lock error)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response | None:
    try:
        return client.post(path, json=body)
    except httpx.TransportError:
        return None


def create_and_run(api_url: str, flow_id: str) -> list[int]:
    """Create flow runs and move each to COMPLETED: transactions that read, then write.
    Status codes as answered, without Prefect's client retries."""
    codes = []
    with httpx.Client(base_url=api_url, timeout=60.0) as client:
        for _ in range(RUNS_PER_WRITER):
            created = post(client, "/flow_runs/", {"flow_id": flow_id})
            codes.append(created.status_code if created is not None else NO_ANSWER)
            if created is None or created.status_code != 201:
                continue
            for state in ("PENDING", "RUNNING", "COMPLETED"):
                path = f"/flow_runs/{created.json()['id']}/set_state"
                response = post(client, path, {"state": {"type": state}})
                codes.append(response.status_code if response is not None else NO_ANSWER)
    return codes


def test_concurrent_flow_run_writes_never_answer_503(tmp_path: Path) -> None:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = stack_environment(tmp_path, api_url, "token", free_port())
    server = start_prefect_server(tmp_path, env, port)
    try:
        flow = httpx.post(f"{api_url}/flows/", json={"name": "locking"}, timeout=30.0)
        flow.raise_for_status()
        with ThreadPoolExecutor(WRITERS) as pool:
            results = pool.map(lambda _: create_and_run(api_url, flow.json()["id"]), range(WRITERS))
            codes = Counter(code for writer in results for code in writer)
    finally:
        server.stop()
    assert codes[503] == codes[NO_ANSWER] == 0, f"{codes}\n{server.log_tail()}"
    assert codes[201] >= WRITERS * RUNS_PER_WRITER
