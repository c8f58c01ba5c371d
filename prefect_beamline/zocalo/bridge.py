"""The Zocalo bridge: `processing_recipe` on RabbitMQ -> the gateway's outbox -> Prefect.

Messages arrive as dodal's `ZocaloTrigger` and `zocalo.go` send them through
python-workflows' PikaTransport: JSON `{"recipes": [...], "parameters": {"ispyb_dcid":
..., ...}}`, headers `zocalo.go.user` and `zocalo.go.host`. Each message is

1. **routed**: every recipe through the routing table (`routing.py`). An unknown recipe,
   a malformed message, a collection the LIMS does not know or one no deployment
   processes is **rejected**: nack without requeue, so RabbitMQ dead-letters it where the
   queue has a dead-letter exchange (Zocalo's `dlq.processing_recipe`), and the log says
   why. Nothing is dropped without a line in the log.
2. **stored** in the outbox, before the ack:
   - a trigger (`event` start/end: dodal) for an `automatic` recipe becomes the
     collection event `/api/v1/zocalo` makes (same mapping, same event id), which the
     drainer emits so the triggers of prefect.yaml run it; a re-sent trigger and a
     redelivery are duplicates;
   - a request (no `event`: `zocalo.go`) is new each time it is sent. For a deployment
     recipe it is stored `skipped` (not emitted) and the bridge creates a manual flow
     run of that deployment, with the event id as Prefect's idempotency key; for an
     `automatic` recipe a `finished` event is emitted under the new id.
   A redelivered message (RabbitMQ's `redelivered` flag: a consumer died before its ack)
   takes back the event id of its unacknowledged receipt, so it is recognised as the
   same message: a duplicate in the outbox, the same flow run in Prefect.
3. **acked**.

The LIMS, the outbox or Prefect failing: the message stays unacked and is retried with
backoff. RabbitMQ failing: the connection is reopened with backoff and RabbitMQ
redelivers what was not acked.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import DateTime, Engine, Integer, String, delete, func, or_, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from prefect_beamline.events import CollectionEvent
from prefect_beamline.gateway.handled import HandledPairs, NotHandled
from prefect_beamline.gateway.mapping import (
    CollectionLookup,
    MappingError,
    ZocaloTrigger,
    describe_errors,
    summarize_errors,
    zocalo_to_event,
)
from prefect_beamline.gateway.outbox import PENDING, SKIPPED, Outbox, Submission, body_digest
from prefect_beamline.runs import deployment_id
from prefect_beamline.zocalo.routing import Route, RoutingTable, UnknownRecipe

logger = logging.getLogger("prefect_beamline.zocalo")

# Headers PikaTransport adds on delivery; the rest are the sender's (zocalo.go.user, ...).
TRANSPORT_HEADERS = frozenset(
    {"consumer_tag", "delivery_mode", "exchange", "message-id", "redelivered", "routing_key",
     "subscription"}
)  # fmt: skip
# A message unacked this long (the bridge down for a week) is taken as new on redelivery.
RECEIPT_RETENTION = timedelta(days=7)
RETRY_START_S = 0.5
RETRY_MAX_S = 30.0
# Fault injection for the crash test: seconds between the outbox commit and the ack.
ACK_DELAY_VARIABLE = "PREFECT_BEAMLINE_ZOCALO_TEST_ACK_DELAY_S"


class Rejected(Exception):
    """A message that can never be processed as sent; dead-lettered with this reason."""


class _ReceiptBase(DeclarativeBase):
    pass


class ReceiptRow(_ReceiptBase):
    """A request message as received, until acked: a redelivery finds its event id here.

    Deleted at the ack (a redelivery can only follow a missing ack); a row left by a
    message that was then rejected, or whose delete failed, goes after `retention`."""

    __tablename__ = "zocalo_bridge_receipt"

    receipt_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    body_hash: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(DateTime)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Receipts:
    """Event ids of request messages, kept in the outbox's database."""

    def __init__(self, engine: Engine, retention: timedelta = RECEIPT_RETENTION) -> None:
        self.engine = engine
        self.retention = retention
        _ReceiptBase.metadata.create_all(engine)

    def event_id(self, body_hash: str, redelivered: bool, new_id: Callable[[], str]) -> str:
        """The id of the unacked receipt of a redelivered message, else a new one."""
        with Session(self.engine) as session, session.begin():
            if redelivered:
                found = session.scalar(
                    select(ReceiptRow.event_id)
                    .where(ReceiptRow.body_hash == body_hash, ReceiptRow.acked_at.is_(None))
                    .order_by(ReceiptRow.receipt_id.desc())
                    .limit(1)
                )
                if found is not None:
                    return found
            event_id = new_id()
            session.add(ReceiptRow(body_hash=body_hash, event_id=event_id, received_at=_now()))
            return event_id

    def acked(self, event_id: str) -> None:
        """Forget the receipt of an acked message, and any older than the retention."""
        stale = _now() - self.retention
        with Session(self.engine) as session, session.begin():
            session.execute(
                delete(ReceiptRow).where(
                    or_(ReceiptRow.event_id == event_id, ReceiptRow.received_at < stale)
                )
            )

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ReceiptRow)) or 0)


@dataclass(frozen=True)
class Delivery:
    """One message as PikaTransport hands it over: the sender's headers and the body."""

    headers: dict[str, Any]
    message: Any
    redelivered: bool

    @classmethod
    def from_transport(cls, header: Mapping[str, Any], message: Any) -> Delivery:
        sender = {k: v for k, v in header.items() if k not in TRANSPORT_HEADERS}
        return cls(sender, message, bool(header.get("redelivered")))

    @property
    def raw_body(self) -> bytes:
        """Headers and message as zocalo.go's fallback files hold them."""
        return json.dumps(
            {"headers": self.headers, "message": self.message}, sort_keys=True
        ).encode()

    @property
    def sender(self) -> str:
        user = self.headers.get("zocalo.go.user") or "unknown"
        host = self.headers.get("zocalo.go.host") or "unknown"
        return f"{user}@{host}"


@dataclass(frozen=True)
class ManualRun:
    deployment: str
    deployment_id: str
    event: CollectionEvent


class ZocaloBridge:
    """Maps, stores and starts what one message asks for (`handle`); `serve` consumes."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        lookup: CollectionLookup,
        routing: RoutingTable,
        handled: HandledPairs,
        api_url: str,
        wake_drainer: Callable[[], None] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self.lookup = lookup
        self.routing = routing
        self.handled = handled
        self.api_url = api_url
        self.receipts = Receipts(outbox.engine)
        self.wake_drainer = wake_drainer

    def handle(self, delivery: Delivery) -> tuple[str, list[str]]:
        """Store (and start) what the message asks for; (summary, event ids to mark acked).

        Raises Rejected for a message that can never be processed; any other exception
        is an infrastructure failure (retry the same delivery).
        """
        trigger = _parse(delivery.message)
        try:
            routes = self.routing.route(trigger.recipes)
        except UnknownRecipe as error:
            raise Rejected(str(error)) from None
        parameters = trigger.parameters
        request_id = None
        if not _is_trigger(delivery.message):  # zocalo.go: a new request each time sent
            request_id = self.receipts.event_id(
                body_digest(delivery.raw_body),
                delivery.redelivered,
                lambda: f"zocalo-go-{parameters.ispyb_dcid}-{uuid.uuid4().hex[:12]}",
            )
        submissions: list[Submission] = []
        runs: list[ManualRun] = []
        for route in routes:
            event = self._event(trigger, route, request_id)
            if route.automatic:
                try:
                    self.handled.check(event)
                except NotHandled as error:
                    raise Rejected(f"data collection {event.collection_id}: {error}") from None
                submissions.append(Submission(event, delivery.raw_body))
                continue
            assert route.deployment is not None
            runs.append(ManualRun(route.deployment, self._deployment_id(route), event))
            note = (
                f"zocalo.go request by {delivery.sender}, recipe {route.recipe!r}: manual run "
                f"of {route.deployment} created by the Zocalo bridge"
            )
            submissions.append(Submission(event, delivery.raw_body, SKIPPED, note))
        admissions = self.outbox.add_many(submissions)
        outcomes = []
        for submission, admission in zip(submissions, admissions, strict=True):
            if admission.outcome == "full":
                raise RuntimeError("outbox backlog full (outbox_max_pending); retrying later")
            if admission.outcome == "conflict":
                logger.warning(
                    "event %s was stored before with a different message; kept the first",
                    submission.event.event_id,
                )
            outcomes.append(f"{submission.event.event_id}: {admission.outcome}")
        if any(
            a.is_new for a, s in zip(admissions, submissions, strict=True) if s.status == PENDING
        ):
            self.wake_drainer()
        for run in runs:
            flow_run = self._create_run(run, delivery.sender)
            outcomes.append(f"flow run {flow_run} of {run.deployment}")
        return "; ".join(outcomes), [request_id] if request_id else []

    def _event(
        self, trigger: ZocaloTrigger, route: Route, request_id: str | None
    ) -> CollectionEvent:
        """The collection event, mapped as /api/v1/zocalo maps it."""
        if request_id is not None:
            guid = request_id if route.automatic else f"{request_id}-{route.recipe}"
            parameters = trigger.parameters.model_copy(update={"guid": guid[:200]})
            trigger = trigger.model_copy(update={"parameters": parameters})
        try:
            return zocalo_to_event(trigger, self.lookup)
        except MappingError as error:
            if error.status_code >= 500:
                raise
            raise Rejected(str(error)) from None

    def _deployment_id(self, route: Route) -> str:
        assert route.deployment is not None
        try:
            return deployment_id(self.api_url, route.deployment)
        except LookupError as error:
            raise Rejected(f"recipe {route.recipe!r}: {error}") from None

    def _create_run(self, run: ManualRun, sender: str) -> str:
        """A manual flow run, created once per event id (Prefect's idempotency key)."""
        body = {
            "parameters": {
                "collection_id": run.event.collection_id,
                "triggered_by": f"zocalo.go:{sender}",
            },
            "tags": ["zocalo.go"],
            "idempotency_key": run.event.event_id,
        }
        response = httpx.post(
            f"{self.api_url}/deployments/{run.deployment_id}/create_flow_run",
            json=body,
            timeout=10.0,
        )
        response.raise_for_status()
        return str(response.json()["id"])

    # -- consuming ----------------------------------------------------------------------

    def serve(
        self,
        connect: Callable[[], Any],
        queue_name: str,
        stop: threading.Event,
        *,
        ready: Callable[[], None] = lambda: None,
    ) -> None:
        """Consume `queue_name` until `stop` is set, reconnecting with backoff."""
        failures = 0
        while not stop.is_set():
            try:
                transport = connect()
                inbox: queue.Queue[tuple[dict[str, Any], Any]] = queue.Queue()
                transport.subscribe(
                    queue_name,
                    lambda header, message, put=inbox.put: put((header, message)),
                    acknowledgement=True,
                    prefetch_count=1,
                )
            except Exception as error:
                failures += 1
                delay = _backoff(failures)
                logger.warning(
                    "RabbitMQ: cannot consume %s (%r); retrying in %.1f s", queue_name, error, delay
                )
                stop.wait(delay)
                continue
            failures = 0
            logger.info("consuming %s", queue_name)
            ready()
            try:
                while not stop.is_set() and transport.is_connected:
                    try:
                        header, message = inbox.get(timeout=0.25)
                    except queue.Empty:
                        continue
                    self.process(transport, header, message, stop)
            finally:
                _quietly(transport.disconnect)
            if not stop.is_set():
                logger.warning("RabbitMQ connection lost; reconnecting")

    def process(
        self, transport: Any, header: dict[str, Any], message: Any, stop: threading.Event
    ) -> None:
        """Handle one delivery, then ack it (or reject it); retry while infrastructure fails."""
        delivery = Delivery.from_transport(header, message)
        attempt = 0
        while True:
            try:
                summary, receipts = self.handle(delivery)
                break
            except Rejected as error:
                logger.error("message rejected (dead-lettered, not processed): %s", error)
                transport.nack(header, requeue=False)
                return
            except (ValidationError, TypeError) as error:
                logger.error("message rejected (dead-lettered, not processed): %s", error)
                transport.nack(header, requeue=False)
                return
            except Exception as error:
                attempt += 1
                delay = _backoff(attempt)
                logger.warning(
                    "infrastructure failure (%r); message kept unacked, retry %d in %.1f s",
                    error, attempt, delay,
                )  # fmt: skip
                if stop.wait(delay) or not transport.is_connected:
                    return  # unacked: RabbitMQ redelivers it
        delay_s = float(os.environ.get(ACK_DELAY_VARIABLE) or 0)
        if delay_s:
            time.sleep(delay_s)
        transport.ack(header)
        for event_id in receipts:
            _quietly(partial(self.receipts.acked, event_id))
        logger.info("message from %s stored: %s", delivery.sender, summary)


def _parse(message: Any) -> ZocaloTrigger:
    if not isinstance(message, dict):
        raise Rejected(f"message is not a JSON object but {type(message).__name__}")
    document = dict(message)
    parameters = document.get("parameters")
    if isinstance(parameters, dict) and "event" not in parameters:
        document["parameters"] = {**parameters, "event": "end"}  # zocalo.go: see _event
    try:
        return ZocaloTrigger.model_validate(document)
    except ValidationError as error:
        raise Rejected(f"message: {summarize_errors(describe_errors(error))}") from None


def _is_trigger(message: dict[str, Any]) -> bool:
    """dodal's ZocaloTrigger names the event (start/end); zocalo.go does not."""
    return "event" in (message.get("parameters") or {})


def _backoff(failures: int) -> float:
    return float(min(RETRY_START_S * 2 ** (failures - 1), RETRY_MAX_S))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:
        logger.debug("ignored failure", exc_info=True)
