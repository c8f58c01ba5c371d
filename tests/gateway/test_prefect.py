"""The gateway against a real Prefect 3 server (`prefect server start`, SQLite).

One server for the module (about 10 s to start). Accepted events must appear in Prefect's
event store; events accepted while the server is down must stay pending, then reach it in
order once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prefect_beamline.gateway.emitter import Backoff, Drainer, PrefectEmitter
from prefect_beamline.gateway.outbox import (
    EMITTED,
    FAILED,
    PENDING,
    Outbox,
    StoredEvent,
    Submission,
)
from prefect_beamline.gateway.server import create_app
from prefect_beamline.settings import BeamlineSettings
from prefect_beamline.stack import ManagedProcess, free_port, start_prefect_server
from tests.gateway.test_app import (
    OPERATOR_TOKEN,
    TOKEN,
    event_body,
    make_settings,
    no_lookup,
    stored,
)
from tests.gateway.test_outbox import POISON_PATH, announcement
from tests.helpers import eventually

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

pytestmark = pytest.mark.e2e
WAIT_S = 30.0


class PrefectServer:
    """A Prefect server on a fixed port and database, which tests may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: ManagedProcess | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update(
            {
                "PREFECT_HOME": str(workdir / "prefect-home"),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
                # Write received events to the database at once, not every 5 s.
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.2",
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
            }
        )

    def start(self) -> None:
        self.process = start_prefect_server(self.workdir, self.env, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def events(self, prefect_ids: list[str]) -> list[dict[str, Any]]:
        """Events with these ids in Prefect's event store, oldest first."""
        response = httpx.post(
            f"{self.api_url}/events/filter",
            json={"filter": {"id": {"id": prefect_ids}, "order": "ASC"}, "limit": 50},
            timeout=10.0,
        )
        response.raise_for_status()
        return list(response.json()["events"])


@pytest.fixture
def running_server(prefect_server: PrefectServer) -> PrefectServer:
    if prefect_server.process is None:
        prefect_server.start()
    return prefect_server


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    return eventually(condition, what, timeout_s, poll_s=0.1)


def announce(client: TestClient, number: int) -> dict[str, Any]:
    body = event_body(event_id=f"i03-{number:04d}-end", collection_id=number)
    response = client.post(
        "/api/v1/collections",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def all_emitted(settings: BeamlineSettings) -> list[StoredEvent] | None:
    rows = stored(settings)
    return rows if rows and all(row.status == EMITTED for row in rows) else None


def test_accepted_event_reaches_prefects_event_store(
    running_server: PrefectServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, lookup=no_lookup, api_url=running_server.api_url)
    with TestClient(app) as client:
        receipt = announce(client, 42)
        wait_for(lambda: all_emitted(settings), "the event was not emitted", 10.0)
        health = client.get("/health", headers=OPERATOR).json()
    assert health["prefect_reachable"] is True and health["pending"] == 0

    (event,) = wait_for(
        lambda: running_server.events([receipt["prefect_event_id"]]),
        "the event is not in Prefect's event store",
    )
    assert event["event"] == "beamline.collection.finished"
    assert event["resource"]["prefect.resource.id"] == "beamline.collection.42"
    assert event["resource"]["beamline.technique"] == "mx"
    assert event["payload"]["collection"]["event_id"] == "i03-0042-end"


def test_events_accepted_while_prefect_is_down_arrive_in_order_when_it_returns(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    prefect_server.stop()
    settings = make_settings(tmp_path)
    app = create_app(
        settings,
        lookup=no_lookup,
        api_url=prefect_server.api_url,
        backoff=Backoff(start_s=0.1, max_s=1.0),
    )
    with TestClient(app) as client:
        receipts = [announce(client, number) for number in (101, 102, 103)]
        rows = wait_for(
            lambda: [r for r in stored(settings) if r.last_error] and stored(settings),
            "the drainer did not try to emit",
        )
        assert [row.status for row in rows] == [PENDING] * 3
        assert [row.attempts for row in rows] == [0, 0, 0]  # Prefect's fault, not theirs
        assert "unreachable" in (rows[0].last_error or "")
        health = client.get("/health", headers=OPERATOR).json()
        assert health["pending"] == 3 and health["prefect_reachable"] is False

        prefect_server.start()  # the same server and database, back on the same port
        wait_for(lambda: all_emitted(settings), "the backlog was not emitted")

    ids = [receipt["prefect_event_id"] for receipt in receipts]
    events = wait_for(
        lambda: (found := prefect_server.events(ids)) and len(found) == 3 and found,
        "the backlog is not in Prefect's event store",
    )
    by_id = {event["id"]: event for event in events}
    received = [by_id[prefect_id]["received"] for prefect_id in ids]
    assert received == sorted(received)  # Prefect received them in sequence order
    assert [by_id[i]["resource"]["prefect.resource.id"] for i in ids] == [
        "beamline.collection.101",
        "beamline.collection.102",
        "beamline.collection.103",
    ]


def test_poison_event_is_dead_lettered_while_later_events_reach_prefect(
    running_server: PrefectServer, tmp_path: Path
) -> None:
    """Reported: one accepted event stopped all processing. A stored event that cannot
    be emitted is tried `outbox_max_attempts` times, then dead-lettered; events accepted
    after it reach Prefect's event store within seconds."""
    settings = make_settings(tmp_path, outbox_max_attempts=2)
    outbox = Outbox(settings.resolved_outbox_url)
    outbox.add(announcement(1, collection_id=500, data_files=[POISON_PATH]), b"{}")
    outbox.close()
    app = create_app(
        settings,
        lookup=no_lookup,
        api_url=running_server.api_url,
        event_backoff=Backoff(start_s=0.2, max_s=0.2),
    )
    with TestClient(app) as client:
        accepted_at = time.monotonic()
        receipts = [announce(client, number) for number in (201, 202)]
        ids = [receipt["prefect_event_id"] for receipt in receipts]
        wait_for(
            lambda: len(running_server.events(ids)) == 2, "later events did not reach Prefect", 10
        )
        reached_s = time.monotonic() - accepted_at
        poison = wait_for(
            lambda: (
                (row := next(r for r in stored(settings) if r.event_id == "evt-1"))
                and row.status == FAILED
                and row
            ),
            "the poison event was not dead-lettered",
            10,
        )
    assert reached_s < 5.0
    assert poison.attempts == 2 and "UnicodeEncodeError" in (poison.last_error or "")


FLOOD = 16_000


def stored_count(server: PrefectServer, beamline: str) -> int:
    """How many events of `beamline` Prefect's event store holds."""
    response = httpx.post(
        f"{server.api_url}/events/filter",
        json={
            "filter": {
                "resource": {"labels": {"beamline.name": [beamline]}},
                "occurred": {"since": "2000-01-01T00:00:00Z"},
            },
            "limit": 1,
        },
        timeout=30.0,
    )
    response.raise_for_status()
    return int(response.json()["total"])


def test_a_backlog_larger_than_prefects_broker_queue_is_stored_whole(
    running_server: PrefectServer, tmp_path: Path
) -> None:
    """Prefect 3.9's in-memory broker queues 10,000 messages per consumer and drops the
    rest after answering 204: a drainer catching up on 15,000 events lost 4,759 of them
    while the outbox counted every one emitted."""
    beamline = f"flood-{uuid.uuid4().hex[:8]}"
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    for start in range(0, FLOOD, 2_000):
        outbox.add_many(
            [
                Submission(announcement(n, event_id=f"{beamline}-{n}", beamline=beamline), b"{}")
                for n in range(start + 1, start + 2_001)
            ]
        )

    async def drain() -> bool:
        emitter = PrefectEmitter(running_server.api_url)
        async with emitter:
            return await Drainer(outbox, emitter).drain_once()

    assert asyncio.run(drain())
    assert all(row.status == EMITTED for row in outbox.list(limit=FLOOD))
    counts = [stored_count(running_server, beamline)]
    deadline = time.monotonic() + 120
    while counts[-1] < FLOOD and time.monotonic() < deadline:
        time.sleep(1.0)
        counts.append(stored_count(running_server, beamline))
        if counts[-1] == counts[-2] and counts[-1] > 0 and len(counts) > 10:
            break  # the persister has stopped: what is missing was dropped
    assert counts[-1] == FLOOD
    outbox.close()
