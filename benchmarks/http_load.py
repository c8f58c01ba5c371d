"""HTTP load generator of the gateway benchmark, run in its own process.

`python -m benchmarks.http_load CONFIG_JSON` posts the announcements CONFIG describes and
writes one JSON object to CONFIG["result_file"]: wall time, per-request latencies (ms), the
indices answered 202 and the client used. Two modes: closed loop (`concurrency`
connections, each posting as soon as its last answer came: throughput and latency) and
open loop (`rate_per_s`: one post every 1/rate seconds whatever the answers, as a DAQ
does).

The load generator shares the machine's cores with the gateway and Prefect, so it must
cost little: by default each connection speaks the few lines of HTTP/1.1 the benchmark
needs over an asyncio stream (`asyncio-http1`, ~40 us of CPU a request under uvloop).
`"client": "httpx"` uses one httpx.AsyncClient per connection instead, as before (about
1 ms of CPU a request: it, not the gateway, limited the first measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

RAW_CLIENT = "asyncio-http1"
HTTPX_CLIENT = "httpx"


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


class Poster(Protocol):
    """One keep-alive connection (one DAQ): posts a body, answers the status code."""

    async def post(self, body: bytes) -> int: ...

    async def close(self) -> None: ...


class Http1Connection:
    """POST over one keep-alive HTTP/1.1 connection, nothing more: the answer's status
    line and Content-Length are read, its body skipped. Reconnects after a failure."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._reader, self._writer
        writer.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, keep_alive = _framing(head)
            await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if not keep_alive:
            await self.close()
        return status

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length, keep-alive) of a response head; the gateway always sends a length."""
    length: int | None = None
    keep_alive = True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    if length is None:
        raise ValueError(f"response without Content-Length: {head[:200]!r}")
    return length, keep_alive


class HttpxConnection:
    """The same through httpx.AsyncClient (one connection: httpx's shared pool would
    serialise 64 tasks)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._client = httpx.AsyncClient(
            headers=headers, timeout=60.0, limits=httpx.Limits(max_connections=1)
        )

    async def post(self, body: bytes) -> int:
        response = await self._client.post(self._url, content=body)
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()


CLIENTS: dict[str, type[Http1Connection] | type[HttpxConnection]] = {
    RAW_CLIENT: Http1Connection,
    HTTPX_CLIENT: HttpxConnection,
}


async def _post(poster: Poster, body: bytes, index: int, result: dict[str, Any]) -> None:
    started = time.perf_counter()
    status: int | str
    try:
        status = await poster.post(body)
    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as error:
        status = type(error).__name__
    result["latencies_ms"].append(1000.0 * (time.perf_counter() - started))
    result["started_s"].append(started)
    result["statuses"][str(status)] += 1
    if status == 202:
        result["accepted"].append(index)


async def load(config: dict[str, Any]) -> dict[str, Any]:
    """Post `n` announcements over `concurrency` keep-alive connections (one per DAQ)."""
    url = f"{config['gateway_url']}/api/v1/collections"
    n, concurrency, rate = config["n"], config.get("concurrency", 64), config.get("rate_per_s")
    client = config.get("client", RAW_CLIENT)
    headers = {"Authorization": f"Bearer {config['token']}", "Content-Type": "application/json"}
    result: dict[str, Any] = {
        "latencies_ms": [],
        "started_s": [],  # perf_counter at each request's start, for a latency timeline
        "statuses": Counter(),
        "accepted": [],
        "client": client,
    }
    posters: list[Poster] = [CLIENTS[client](url, headers) for _ in range(concurrency)]
    try:
        started = time.perf_counter()
        if rate:
            idle: asyncio.Queue[Poster] = asyncio.Queue()
            for poster in posters:
                idle.put_nowait(poster)

            async def post_with_a_free_connection(index: int, body: bytes) -> None:
                poster = await idle.get()
                try:
                    await _post(poster, body, index, result)
                finally:
                    idle.put_nowait(poster)

            tasks = []
            for index in range(n):
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = announcement(config["prefix"], config["visit"], index, config["data_root"])
                tasks.append(asyncio.create_task(post_with_a_free_connection(index, body)))
            await asyncio.gather(*tasks)
        else:
            indices: Iterator[int] = iter(range(n))

            async def worker(poster: Poster) -> None:
                for index in indices:
                    body = announcement(
                        config["prefix"], config["visit"], index, config["data_root"]
                    )
                    await _post(poster, body, index, result)

            await asyncio.gather(*(worker(poster) for poster in posters))
        result["wall_s"] = time.perf_counter() - started
    finally:
        for poster in posters:
            await poster.close()
    return result


def main() -> int:
    config = json.loads(sys.argv[1])
    try:
        import uvloop

        result = uvloop.run(load(config))
    except ImportError:
        result = asyncio.run(load(config))
    # To a file, not stdout: under uvloop a 64 KiB+ line to a pipe came out split in two.
    Path(config["result_file"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
