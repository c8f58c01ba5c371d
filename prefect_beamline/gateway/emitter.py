"""Getting outbox events to Prefect: `PrefectEmitter` sends, `Drainer` decides what and when.

Events go to Prefect's `POST {PREFECT_API_URL}/events` (a JSON list; 204) in batches of
up to `batch_size`, by sequence. (Prefect's `/api/events/in` websocket is faster but
acknowledges nothing, so an event sent there could be lost in a crash: the outbox keeps
an event until a POST carrying it succeeded.) Two kinds of failure, told apart:

- **Prefect cannot take events now**: connection error, 502/503/504 (a busy SQLite
  server answers 503 "database is locked"), or a 4xx about the connection rather than
  the event (401/403 credentials, 404 wrong URL, 408, 429). Not the events' fault: the
  drainer backs off globally (0.2 s doubling to 10 s), notes the error on the events,
  and counts no attempt.
- **An event is at fault**: it cannot be built or serialised (e.g. a lone surrogate
  that UTF-8 cannot encode), Prefect refuses it (another 4xx), or a 500 that only it
  provokes while Prefect's `/health` answers. A failing batch is split in halves until
  the faulty event is alone; that event's attempt is counted with its error, it is
  retried after its own backoff (1 s doubling to 5 min), and after `max_attempts` it is
  dead-lettered (`failed`). Every other event goes on, except later events of the same
  collection, which wait for it (order is kept per collection).

The Prefect event id is derived from the DAQ's event id, so re-sending after a crash
between send and mark is harmless: Prefect drops the repeated id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from prefect_beamline import metrics
from prefect_beamline.events import encode_prefect_event, prefect_event_id_text
from prefect_beamline.gateway.outbox import Outbox, StoredEvent

logger = logging.getLogger("prefect_beamline.gateway")
T = TypeVar("T")

# Answers that say Prefect cannot take events now, whatever they are.
UNAVAILABLE_STATUSES = frozenset({401, 403, 404, 408, 429, 502, 503, 504})
MAX_ERROR_TEXT = 500


@dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt after `failures` consecutive failures, seconds."""

    start_s: float = 0.2
    max_s: float = 10.0

    def after(self, failures: int) -> float:
        """Delay after `failures` consecutive failed attempts (>= 1)."""
        return min(self.start_s * 2 ** (max(failures, 1) - 1), self.max_s)


# An event at fault: retried after 1 s, 2 s, 4 s, ... up to 5 min between attempts.
EVENT_BACKOFF = Backoff(start_s=1.0, max_s=300.0)
DEFAULT_MAX_ATTEMPTS = 10
# Prefect 3.9's in-memory broker queues at most 10,000 messages per consumer and drops the
# rest, after its POST has answered 204 (server/utilities/messaging/memory.py). So at most
# this many of our events may be in Prefect and not yet seen in its event store: past it
# the drainer waits until the oldest batch not yet seen stored is (the persister works in
# order). Room is left for Prefect's own events (flow run states) in the same queue.
UNSTORED_LIMIT = 5_000
STORED_WAIT_S = 60.0
STORED_POLL_S = 0.1
# While announcements queue at the door (a burst), batches wait, for at most this long
# per busy spell. The drainer's reads and POSTs share the gateway's one core of Python
# with the requests, and Prefect's ingest (~1.3 ms of CPU an event) the machine's other
# core: during a 10,000-event burst they doubled the p99 of a 202 (issue 10). Prefect
# takes ~700 events/s here either way, so a burst reaches it no later. A spell longer than
# this is a flood, not a burst: the drainer then goes at full pace again until the door
# has been quiet for DOOR_QUIET_S, so Prefect never starves behind a busy door.
DOOR_DEFER_S = 5.0
DOOR_QUIET_S = 0.2
DOOR_POLL_S = 0.02


@dataclass(frozen=True)
class EmitResult:
    """What Prefect made of one POST.

    emitted: taken; unavailable: Prefect cannot take events now; server_error: a 500
    that may be about the events sent; refused: a 4xx about the events sent.
    """

    outcome: Literal["emitted", "unavailable", "server_error", "refused"]
    message: str = ""


def prefect_auth_headers() -> dict[str, str]:
    """Authorization as Prefect's own client sends it (auth string, else API key)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    auth_string = PREFECT_API_AUTH_STRING.value()
    if auth_string:
        token = base64.b64encode(str(auth_string).encode()).decode()
        return {"Authorization": f"Basic {token}"}
    api_key = PREFECT_API_KEY.value()
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


def encode_event(row: StoredEvent) -> bytes:
    """The Prefect event of an outbox row as UTF-8 JSON (raises if it cannot be built)."""
    return encode_prefect_event(row.event)


class EncodedEvents:
    """Prefect events the gateway encoded at the door (to check their size), by outbox
    sequence, so the drainer sends those bytes instead of validating and encoding each
    row again: half the CPU an event costs on the way out. Bounded: past `capacity` the
    oldest are forgotten and encoded again from their rows, as after a restart."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._by_sequence: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def put(self, sequence: int, encoded: bytes) -> None:
        with self._lock:
            if len(self._by_sequence) >= self.capacity:
                del self._by_sequence[next(iter(self._by_sequence))]
            self._by_sequence[sequence] = encoded

    def take(self, sequence: int) -> bytes | None:
        with self._lock:
            return self._by_sequence.pop(sequence, None)

    def __len__(self) -> int:
        return len(self._by_sequence)


def _encode_rows(
    rows: list[StoredEvent], known: EncodedEvents
) -> list[tuple[StoredEvent, bytes | Exception]]:
    """Each row's encoded event, or why it cannot be built. Runs on the drainer's thread:
    a batch of 500 takes ~25 ms, which on the event loop would hold up every request."""
    built: list[tuple[StoredEvent, bytes | Exception]] = []
    for row in rows:
        try:
            built.append((row, known.take(row.sequence) or encode_event(row)))
        except Exception as error:
            built.append((row, error))
    return built


class PrefectEmitter:
    """HTTP client of Prefect's events API; use as `async with emitter: ...`."""

    def __init__(
        self,
        api_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = {**(headers or {}), "Content-Type": "application/json"}
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> PrefectEmitter:
        self._client = httpx.AsyncClient(
            headers=self._headers, timeout=self._timeout_s, transport=self._transport
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("PrefectEmitter used outside `async with`")
        return self._client

    async def send(self, events: list[bytes]) -> EmitResult:
        """POST a batch of encoded Prefect events (in order) and classify the answer."""
        url = f"{self.api_url}/events"
        try:
            response = await self.client.post(url, content=b"[" + b",".join(events) + b"]")
        except httpx.HTTPError as error:
            return EmitResult("unavailable", f"Prefect API {url} unreachable: {error!r}")
        if response.is_success:
            return EmitResult("emitted")
        message = (
            f"Prefect API {url} answered {response.status_code}: {response.text[:MAX_ERROR_TEXT]}"
        )
        if response.status_code in UNAVAILABLE_STATUSES:
            return EmitResult("unavailable", message)
        if response.status_code >= 500:
            return EmitResult("server_error", message)
        return EmitResult("refused", message)

    async def is_stored(self, prefect_event_id: str, occurred: datetime) -> bool:
        """Whether Prefect's event store holds this event (searched around `occurred`:
        Prefect's filter looks back only a day by default, a backlog may be older)."""
        window = {
            "since": (occurred - timedelta(minutes=5)).isoformat(),
            "until": (occurred + timedelta(minutes=5)).isoformat(),
        }
        body = {"filter": {"id": {"id": [prefect_event_id]}, "occurred": window}, "limit": 1}
        response = await self.client.post(f"{self.api_url}/events/filter", json=body)
        response.raise_for_status()
        return bool(response.json().get("events"))

    async def reachable(self, timeout_s: float = 1.0) -> bool:
        """Whether Prefect's `/health` answers 200 right now."""
        try:
            response = await self.client.get(f"{self.api_url}/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


@dataclass
class DrainerStatus:
    """What /health reports about the link to Prefect."""

    prefect_reachable: bool | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_emitted_at: datetime | None = None
    emitted: int = 0
    consecutive_failures: int = 0
    dead_lettered: int = 0


@dataclass
class _Round:
    """One pass over the due events: collections held back behind a failed event."""

    held: set[int | None] = field(default_factory=set)

    def admits(self, row: StoredEvent) -> bool:
        return row.collection_id is None or row.collection_id not in self.held

    def hold(self, row: StoredEvent) -> None:
        if row.collection_id is not None:
            self.held.add(row.collection_id)


class Drainer:
    """Background task of the gateway: emits due events until stopped.

    `wake()` after each accepted event, so the happy path emits at once instead of on a
    poll. Otherwise it sleeps until the next backed-off event is due or `idle_poll_s`,
    which also picks up events requeued from another process (the CLI). Every
    `prune_every_s` it deletes what is older than `retention`. Its database calls, the
    encoding of events and their metrics run on a thread of its own, so a burst of
    requests cannot starve it and it does not hold up the requests' event loop.
    """

    def __init__(
        self,
        outbox: Outbox,
        emitter: PrefectEmitter,
        *,
        batch_size: int = 500,
        backoff: Backoff | None = None,
        event_backoff: Backoff = EVENT_BACKOFF,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        idle_poll_s: float = 5.0,
        retention: timedelta | None = None,
        prune_every_s: float = 60.0,
        unstored_limit: int = UNSTORED_LIMIT,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.outbox = outbox
        self.emitter = emitter
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.event_backoff = event_backoff
        self.max_attempts = max_attempts
        self.idle_poll_s = idle_poll_s
        self.retention = retention
        self.prune_every_s = prune_every_s
        self.status = DrainerStatus()
        self.encoded = EncodedEvents()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox-drainer")
        self._pruned_at: float | None = None
        self.unstored_limit = unstored_limit
        self._sent = 0  # events Prefect has taken since start
        self._seen_stored = 0  # of those, the first this many are known stored
        self._batches: deque[tuple[int, StoredEvent]] = deque()  # (sent after it, last)
        # The app's "announcements are queueing at the door" (see DOOR_DEFER_S).
        self.door_busy: Callable[[], bool] | None = None
        self._busy_since: float | None = None  # this busy spell's start
        self._quiet_since: float | None = None

    def wake(self) -> None:
        self._wake.set()

    async def _db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    async def run(self) -> None:
        """Drain, prune now and then, then wait for a wake-up, the next due event or the
        idle poll; back off while Prefect cannot take events."""
        async with self.emitter:
            while True:
                self._wake.clear()
                try:
                    drained = await self.drain_once()
                    await self._prune_if_due()
                except Exception as error:  # the outbox database failed: keep trying
                    logger.exception("draining the outbox failed")
                    self._unavailable(f"outbox drain failed: {error!r}")
                    drained = False
                if drained and self._wake.is_set():
                    continue  # accepted while draining: go again without waiting
                if drained:
                    idle_s = await self._idle_s()
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a
                    # cancellation that comes as the wake-up does, and the lifespan's
                    # shutdown then waits for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle_s):
                            await self._wake.wait()
                else:
                    await asyncio.sleep(self.backoff.after(self.status.consecutive_failures))

    async def _idle_s(self) -> float:
        """Seconds until the next backed-off event is due, at most `idle_poll_s`."""
        due = await self._db(self.outbox.next_attempt_at)
        if due is None:
            return self.idle_poll_s
        return min(max((due - datetime.now(UTC)).total_seconds(), 0.01), self.idle_poll_s)

    async def drain_once(self) -> bool:
        """Emit due events until none is left (True) or Prefect cannot take events now
        (False: retry after a global backoff). Events at fault are counted and put off."""
        while True:
            await self._give_way_to_the_door()
            batch = await self._db(self.outbox.due, self.batch_size)
            if not batch:
                return True
            if not await self._emit(batch, _Round()):
                return False

    async def _give_way_to_the_door(self) -> None:
        """Wait while the door is busy, for at most DOOR_DEFER_S of each busy spell."""
        loop = asyncio.get_running_loop()
        while self.door_busy is not None:
            now = loop.time()
            if self.door_busy():
                self._quiet_since = None
                if self._busy_since is None:
                    self._busy_since = now
            else:
                if self._quiet_since is None:
                    self._quiet_since = now
                if now - self._quiet_since >= DOOR_QUIET_S:
                    self._busy_since = None  # the spell is over
            if self._busy_since is None or now - self._busy_since >= DOOR_DEFER_S:
                return
            await asyncio.sleep(DOOR_POLL_S)

    async def _emit(self, batch: list[StoredEvent], round_: _Round) -> bool:
        """Build and send `batch`; False when Prefect cannot take events now."""
        admitted = [row for row in batch if round_.admits(row)]
        built = await self._db(_encode_rows, admitted, self.encoded)
        encoded: list[tuple[StoredEvent, bytes]] = []
        for row, body in built:
            if not round_.admits(row):
                continue
            if isinstance(body, Exception):
                await self._event_failed(row, f"could not build the Prefect event: {body!r}")
                round_.hold(row)
            else:
                encoded.append((row, body))
        return await self._send(encoded, round_)

    async def _send(self, encoded: list[tuple[StoredEvent, bytes]], round_: _Round) -> bool:
        encoded = [(row, body) for row, body in encoded if round_.admits(row)]
        if not encoded:
            return True
        rows = [row for row, _ in encoded]
        result = await self.emitter.send([body for _, body in encoded])
        if result.outcome == "emitted":
            await self._db(self._mark_emitted, rows)
            self.status.prefect_reachable = True
            self.status.consecutive_failures = 0
            self.status.emitted += len(rows)
            self.status.last_emitted_at = datetime.now(UTC)
            self._sent += len(rows)
            self._batches.append((self._sent, rows[-1]))
            while self._sent - self._seen_stored > self.unstored_limit and self._batches:
                sent_after, last = self._batches.popleft()
                await self._wait_until_stored(last)
                self._seen_stored = sent_after
            return True
        if result.outcome == "unavailable" or (
            result.outcome == "server_error" and not await self.emitter.reachable()
        ):
            self.status.prefect_reachable = False
            self._unavailable(result.message)
            logger.warning("Prefect cannot take events now: %s", result.message)
            await self._db(self.outbox.note_unavailable, [rows[0].sequence], result.message)
            return False
        self.status.prefect_reachable = True
        if len(encoded) == 1:
            await self._event_failed(rows[0], result.message)
            round_.hold(rows[0])
            return True
        middle = len(encoded) // 2  # find the faulty event; the others go on in order
        return await self._send(encoded[:middle], round_) and await self._send(
            encoded[middle:], round_
        )

    async def _wait_until_stored(self, last: StoredEvent) -> None:
        """Hold the drain until Prefect has stored `last` (and so, in order, what came
        before), so Prefect's broker never holds more than UNSTORED_LIMIT of our events."""
        event_id = prefect_event_id_text(last.event_id)
        deadline = asyncio.get_running_loop().time() + STORED_WAIT_S
        while True:
            try:
                if await self.emitter.is_stored(event_id, last.event.timestamp):
                    break
            except (httpx.HTTPError, ValueError, KeyError) as error:
                logger.warning(
                    "cannot tell whether Prefect stored event %s: %r", last.event_id, error
                )
                break
            if asyncio.get_running_loop().time() > deadline:
                logger.warning(
                    "Prefect has not stored event %s %s s after it took it; going on",
                    last.event_id,
                    STORED_WAIT_S,
                )
                break
            await asyncio.sleep(STORED_POLL_S)

    def _mark_emitted(self, rows: list[StoredEvent]) -> None:
        self.outbox.mark_emitted([row.sequence for row in rows])
        metrics.record_emitted(rows)

    async def _event_failed(self, row: StoredEvent, message: str) -> None:
        """Count a failed attempt of `row`; retry it later, or dead-letter it."""
        attempts = row.attempts + 1
        give_up = attempts >= self.max_attempts
        retry_at = datetime.now(UTC) + timedelta(seconds=self.event_backoff.after(attempts))
        error = f"attempt {attempts} of {self.max_attempts}: {message}"
        if give_up:
            logger.error("event %s dead-lettered: %s", row.event_id, error)
            self.status.dead_lettered += 1
            metrics.record_dead_lettered([row])
        else:
            logger.warning("event %s failed, retry at %s: %s", row.event_id, retry_at, error)
        self.status.last_error = error
        self.status.last_error_at = datetime.now(UTC)
        await self._db(
            self.outbox.record_failure,
            [row.sequence],
            error,
            give_up=give_up,
            next_attempt_at=retry_at,
        )

    async def _prune_if_due(self) -> None:
        if self.retention is None:
            return
        now = asyncio.get_running_loop().time()
        if self._pruned_at is not None and now - self._pruned_at < self.prune_every_s:
            return
        self._pruned_at = now
        deleted = await self._db(self.outbox.prune, datetime.now(UTC) - self.retention)
        if deleted:
            logger.info("pruned %d emitted or skipped event(s) past retention", deleted)

    def _unavailable(self, message: str) -> None:
        self.status.consecutive_failures += 1
        self.status.last_error = message
        self.status.last_error_at = datetime.now(UTC)
