"""HTTP load generator of the gateway benchmark, run in its own process.

`python -m benchmarks.http_load CONFIG_JSON` posts the announcements CONFIG describes and
prints one JSON object: wall time, per-request latencies (ms) and the indices answered
202. Two modes: closed loop (`concurrency` tasks, each posting as soon as its last
answer came: throughput and latency) and open loop (`rate_per_s`: one post every 1/rate
seconds whatever the answers, as a DAQ does).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx


def announcement(prefix: str, visit: str, index: int, data_root: str = "/data") -> bytes:
    """A valid project-schema announcement; collections cycle so some share one."""
    return json.dumps(
        {
            "event_id": f"{prefix}-{index}",
            "kind": "finished",
            "technique": "mx",
            "experiment_type": "rotation",
            "beamline": "i03",
            "visit": visit,
            "collection_id": 1 + index % 997,
            "data_files": [f"{data_root}/bench/{prefix}/{index}_master.h5"],
            "timestamp": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, index: int, result: dict[str, Any]
) -> None:
    started = time.perf_counter()
    status: int | str
    try:
        response = await client.post(url, content=body)
        status = response.status_code
    except httpx.HTTPError as error:
        status = type(error).__name__
    result["latencies_ms"].append(1000.0 * (time.perf_counter() - started))
    result["statuses"][str(status)] += 1
    if status == 202:
        result["accepted"].append(index)


async def load(config: dict[str, Any]) -> dict[str, Any]:
    """Post `n` announcements; each of `concurrency` tasks has its own client (one
    keep-alive connection, like one DAQ), as httpx's shared pool serialises 64 tasks."""
    url = f"{config['gateway_url']}/api/v1/collections"
    n, concurrency, rate = config["n"], config.get("concurrency", 64), config.get("rate_per_s")
    headers = {"Authorization": f"Bearer {config['token']}", "Content-Type": "application/json"}
    result: dict[str, Any] = {"latencies_ms": [], "statuses": Counter(), "accepted": []}
    clients = [
        httpx.AsyncClient(headers=headers, timeout=60.0, limits=httpx.Limits(max_connections=1))
        for _ in range(concurrency)
    ]
    try:
        started = time.perf_counter()
        if rate:
            idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
            for client in clients:
                idle.put_nowait(client)

            async def post_with_a_free_client(index: int, body: bytes) -> None:
                client = await idle.get()
                try:
                    await _post(client, url, body, index, result)
                finally:
                    idle.put_nowait(client)

            tasks = []
            for index in range(n):
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = announcement(config["prefix"], config["visit"], index, config["data_root"])
                tasks.append(asyncio.create_task(post_with_a_free_client(index, body)))
            await asyncio.gather(*tasks)
        else:
            indices: Iterator[int] = iter(range(n))

            async def worker(client: httpx.AsyncClient) -> None:
                for index in indices:
                    body = announcement(
                        config["prefix"], config["visit"], index, config["data_root"]
                    )
                    await _post(client, url, body, index, result)

            await asyncio.gather(*(worker(client) for client in clients))
        result["wall_s"] = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return result


def main() -> int:
    config = json.loads(sys.argv[1])
    try:
        import uvloop

        result = uvloop.run(load(config))
    except ImportError:
        result = asyncio.run(load(config))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
