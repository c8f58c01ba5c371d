"""One OpenTelemetry trace per announcement: DAQ -> gateway -> Prefect flow run -> tasks -> LIMS.

The DAQ may send a W3C `traceparent` header (or the event's `traceparent` field); the
gateway continues that trace (FastAPI's own request spans, `fastapi.telemetry`), or
starts one, and stores the traceparent with the event in
the outbox. It travels in the Prefect event (`payload.collection.traceparent`, and a
related resource `beamline.trace.<trace id>`) into the flow's `collection` parameter.
`prefect-beamline serve` hands it to Prefect's own run telemetry
(`prefect.telemetry.run_telemetry`: a span per flow and task run, parented by the run's
`__OTEL_TRACEPARENT` label), so the flow span is a child of the gateway's span and task
spans are children of the flow's. The LIMS job records the trace id.

Export is optional. `OTEL_EXPORTER_OTLP_ENDPOINT` (standard OpenTelemetry variable; needs
the `otlp` extra) sends spans to a collector; `PREFECT_BEAMLINE_TRACE_FILE` appends them
to a JSON-lines file (tests, a quick look without a collector). With neither, no spans
are recorded, but the trace id is still propagated to the LIMS job.
"""

from __future__ import annotations

import json
import multiprocessing.util
import os
import random
import threading
from collections.abc import MutableMapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind

TRACER_NAME = "prefect_beamline"
OTLP_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACE_FILE_VARIABLE = "PREFECT_BEAMLINE_TRACE_FILE"
_configured = False
_configure_lock = threading.Lock()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def tracing_enabled() -> bool:
    """Whether this process records spans (an exporter was configured)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def configure_tracing(service_name: str) -> bool:
    """Install a tracer provider with the configured exporters; False when none is.

    Idempotent per process. Forked children (the runner's flow runs) inherit it; spans
    still buffered for OTLP are flushed when such a child exits (it skips `atexit`).
    """
    global _configured
    with _configure_lock:
        if _configured:
            return tracing_enabled()
        _configured = True
        trace_file = os.environ.get(TRACE_FILE_VARIABLE)
        otlp_endpoint = os.environ.get(OTLP_ENDPOINT_VARIABLE)
        if not trace_file and not otlp_endpoint:
            return False
        resource = Resource.create(
            {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name}
        )
        provider = TracerProvider(resource=resource)
        if trace_file:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(Path(trace_file))))
        if otlp_endpoint:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
            multiprocessing.util.register_after_fork(provider, _flush_at_process_exit)
        trace.set_tracer_provider(provider)
        return True


def _flush_at_process_exit(provider: Any) -> None:
    """In a multiprocessing child: send buffered spans before it exits (`os._exit`)."""
    multiprocessing.util.Finalize(provider, provider.force_flush, exitpriority=100)


def _otlp_exporter() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise RuntimeError(
            f"{OTLP_ENDPOINT_VARIABLE} is set but the OTLP exporter is not installed: "
            "pip install 'prefect-beamline[otlp]'"
        ) from None
    return OTLPSpanExporter()


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line (OpenTelemetry's own span JSON).

    One `write` per batch on a file opened for appending, so the processes of a runner
    can share the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(span.to_json())) + "\n" for span in spans)
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(lines)
        return SpanExportResult.SUCCESS


# -- traceparent helpers ------------------------------------------------------------------


def traceparent_of(span_context: trace.SpanContext) -> str:
    """W3C traceparent `00-<trace id>-<span id>-<flags>` of a span context."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def new_traceparent() -> str:
    """A fresh, sampled traceparent: the correlation id when nothing records spans.

    Random ids as OpenTelemetry's own id generator makes them (`random.getrandbits`):
    no system call per request (the gateway's event loop would give up the GIL for it).
    """
    trace_id = random.getrandbits(128) or 1  # all zeros is the W3C "invalid" id
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a traceparent (None for None)."""
    return traceparent.split("-")[1] if traceparent else None


def current_traceparent() -> str | None:
    """Traceparent of the span this code runs in, if any."""
    span_context = trace.get_current_span().get_span_context()
    return traceparent_of(span_context) if span_context.is_valid else None


def parent_context(traceparent: str | None) -> context.Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


# -- gateway ------------------------------------------------------------------------------


def not_an_announcement(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's request spans only for POSTs: scrapes of /health and /metrics are noise."""
    return scope.get("method") != "POST"


class PropagateTraceContext:
    """ASGI middleware for when this process records no spans: the caller's `traceparent`
    header is still made current, so the stored event continues the caller's trace.

    With tracing on, FastAPI's own telemetry opens a server span per request, child of
    the caller's header, and this middleware steps aside.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        # The headers the configured propagators read (W3C: traceparent, tracestate,
        # baggage); a request without any of them has no context to continue.
        self._fields = frozenset(
            name.lower().encode("latin-1") for name in propagate.get_global_textmap().fields
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or tracing_enabled()
            or not any(key in self._fields for key, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)  # nothing to continue: no context work
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        token = context.attach(propagate.extract(headers))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


def stamp_trace(event: Any) -> Any:
    """The event with its `traceparent`: the DAQ's own field if set, else the current
    (gateway) span's, else a new trace's."""
    if event.traceparent:
        return event
    stamped = event.model_copy(update={"traceparent": current_traceparent() or new_traceparent()})
    span = trace.get_current_span()
    span.set_attribute("beamline.event_id", event.event_id)
    span.set_attribute("beamline.collection_id", event.collection_id)
    return stamped


def record_emission_spans(rows: Sequence[Any], emitted_at: datetime) -> None:
    """A span per emitted outbox row, from the 202 to Prefect taking it, in its trace."""
    if not tracing_enabled():
        return
    end_ns = int(emitted_at.timestamp() * 1e9)
    for row in rows:
        span = tracer().start_span(
            "outbox to Prefect",
            context=parent_context(row.event.traceparent),
            kind=SpanKind.PRODUCER,
            start_time=int(row.received_at.timestamp() * 1e9),
            attributes={
                "beamline.event_id": row.event_id,
                "beamline.outbox.sequence": row.sequence,
                "beamline.outbox.attempts": row.attempts,
                "prefect.event.id": str(row.event.prefect_event_id),
            },
        )
        span.end(end_time=end_ns)


# -- runner and flows ---------------------------------------------------------------------


def announced_traceparent(parameters: dict[str, Any] | None) -> str | None:
    """The traceparent of a flow run's `collection` parameter, if the run has one."""
    collection = (parameters or {}).get("collection")
    if isinstance(collection, dict):
        value = collection.get("traceparent")
        return value if isinstance(value, str) and value else None
    return None


def in_announced_trace(flow_run: Any) -> Any:
    """`flow_run` with its announcement's traceparent as its `__OTEL_TRACEPARENT` label.

    Prefect parents a flow run's span on that label; an automation cannot set labels, so
    whoever starts the run's process (`serve`'s runner, the beamline worker) copies the
    announced traceparent onto the run it hands to the child.
    """
    from prefect.telemetry.run_telemetry import LABELS_TRACEPARENT_KEY

    traceparent = announced_traceparent(getattr(flow_run, "parameters", None))
    if flow_run is not None and traceparent:
        labels = dict(flow_run.labels or {})
        labels.setdefault(LABELS_TRACEPARENT_KEY, traceparent)
        flow_run.labels = labels
    return flow_run


def trace_served_runs() -> None:
    """Make every run `serve` starts a child of its announcement's trace
    (`prefect.runner._starter_direct` documents its module-level `run_flow_in_subprocess`
    as the place to patch)."""
    import prefect.runner._starter_direct

    starter: Any = prefect.runner._starter_direct
    original = starter.run_flow_in_subprocess
    if getattr(original, "_beamline_traced", False):
        return

    def run_in_announced_trace(flow: Any, flow_run: Any = None, **kwargs: Any) -> Any:
        return original(flow, flow_run=in_announced_trace(flow_run), **kwargs)

    run_in_announced_trace._beamline_traced = True  # type: ignore[attr-defined]
    starter.run_flow_in_subprocess = run_in_announced_trace


def job_trace_id(announced_traceparent: str | None) -> str | None:
    """The trace id a LIMS job records: the announcement's, else the run's own (manual
    runs while tracing is on), else None."""
    return trace_id_of(announced_traceparent) or trace_id_of(current_traceparent())
