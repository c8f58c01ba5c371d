"""Spans leave for an OpenTelemetry collector over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
is set, from the process and from the forked processes `serve` runs flows in, which exit
without running `atexit` (issue 12). Each case runs in a fresh interpreter: a process
sets its tracer provider once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from prefect_beamline.stack import free_port

SCRIPT = textwrap.dedent(
    """
    import multiprocessing

    from prefect_beamline.tracing import configure_tracing, tracer

    assert configure_tracing("prefect-beamline-test")
    with tracer().start_as_current_span("in-the-parent"):
        pass

    def run_in_child():
        with tracer().start_as_current_span("in-a-forked-child"):
            pass

    child = multiprocessing.get_context("fork").Process(target=run_in_child)
    child.start()
    child.join()
    assert child.exitcode == 0
    """
)


class Collector:
    """A stand-in OpenTelemetry collector: the span names POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.services: set[str] = set()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    for attribute in resource_spans.resource.attributes:
                        if attribute.key == "service.name":
                            received.services.add(attribute.value.string_value)
                    for scope_spans in resource_spans.scope_spans:
                        received.span_names.extend(span.name for span in scope_spans.spans)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_spans_of_a_process_and_its_forked_children_reach_the_otlp_collector(
    collector: Collector,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PREFECT_BEAMLINE_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.url
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert sorted(collector.span_names) == ["in-a-forked-child", "in-the-parent"]
    assert collector.services == {"prefect-beamline-test"}


def test_no_exporter_configured_records_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PREFECT_BEAMLINE_"))}
    script = (
        "from prefect_beamline.tracing import configure_tracing, tracing_enabled\n"
        "assert configure_tracing('x') is False and not tracing_enabled()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
