"""What every technique's demo shares: a stack, the DAQ's webhook, waiting for the run,
and the part of the report every technique prints (run, files, LIMS, UI).

Each technique's `techniques/<t>/demo.py` writes its synthetic data, announces it and
adds what only it knows (per-image table, volume, movies) to the report.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.lims import Lims, ProcessingJobSummary
from prefect_beamline.report import SUMMARY_FILE
from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack, embedded_stack

RUN_TIMEOUT_S = 300.0


def daq_event(
    technique: str,
    collection_id: int,
    data_file: Path,
    *,
    beamline: str,
    visit: str,
    kind: CollectionEventKind = CollectionEventKind.finished,
    **fields: Any,
) -> CollectionEvent:
    """An announcement as a DAQ sends it for a collection it wrote (by default `finished`);
    `fields` are the event's other fields (experiment_type, grid, processing_parameters)."""
    return CollectionEvent(
        event_id=f"demo-{kind.value}-{uuid.uuid4()}",
        kind=kind,
        technique=technique,
        beamline=beamline,
        visit=visit,
        collection_id=collection_id,
        data_files=[str(data_file)],
        **fields,
    )


def post_event(
    stack: LocalStack, event: CollectionEvent, *, traceparent: str | None = None
) -> dict[str, Any]:
    """POST the announcement to the gateway as a DAQ does (a traced one sends its W3C
    `traceparent` header); raise on anything but 202."""
    headers = {
        "Authorization": f"Bearer {stack.gateway_token}",
        "Content-Type": "application/json",
    }
    if traceparent is not None:
        headers["traceparent"] = traceparent
    response = httpx.post(
        f"{stack.gateway_url}/api/v1/collections",
        content=event.model_dump_json(),
        headers=headers,
        timeout=10.0,
    )
    if response.status_code != 202:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text}")
    return dict(response.json())


@dataclass(frozen=True)
class DemoRun:
    """The automation-started flow run of one announcement, once it has finished."""

    flow_run_id: str
    state: str
    accepted: dict[str, Any]
    webhook_to_running_s: float
    flow_run_name: str = ""


def announce_and_wait(
    stack: LocalStack,
    event: CollectionEvent,
    deployment: str,
    timeout_s: float = RUN_TIMEOUT_S,
) -> DemoRun:
    """POST `event`, then follow the run of `deployment` it starts to a final state."""
    posted_at = time.monotonic()
    accepted = post_event(stack, event)
    run = wait_for_new_flow_run(stack.api_url, deployment, event.collection_id, set(), timeout_s)
    running = wait_for_state(
        stack.api_url, run.id, {"RUNNING", *TERMINAL_STATES}, timeout_s, poll_s=0.05
    )
    webhook_to_running_s = time.monotonic() - posted_at
    final = wait_for_state(stack.api_url, running.id, TERMINAL_STATES, timeout_s)
    return DemoRun(final.id, final.state, accepted, round(webhook_to_running_s, 3), final.name)


def new_collection_id() -> int:
    """A data collection id no earlier demo on this LIMS used (milliseconds since epoch)."""
    return int(time.time() * 1000) % 1_000_000_000


@dataclass(frozen=True)
class DemoSession:
    """A demo under way: where its data goes, the stack it runs on, when it started."""

    workdir: Path
    stack: LocalStack
    started: float

    @property
    def lims(self) -> Lims:
        """The LIMS the stack's flows write."""
        return self.stack.lims

    def announce(
        self, event: CollectionEvent, deployment: str
    ) -> tuple[dict[str, Any], ProcessingJobSummary | None]:
        """POST `event`, follow the run of `deployment` it starts, and report it: the keys
        every demo reports, and the collection's latest job for technique extras."""
        run = announce_and_wait(self.stack, event, deployment)
        jobs = self.lims.jobs_for_collection(event.collection_id)
        job = jobs[-1] if jobs else None
        results_dir = Path(job.results_dir) if job and job.results_dir else None
        summary_file = results_dir / SUMMARY_FILE if results_dir else None
        summary = (
            json.loads(summary_file.read_text()) if summary_file and summary_file.exists() else {}
        )
        report: dict[str, Any] = {
            "flow_run_id": run.flow_run_id,
            "flow_run_name": run.flow_run_name,
            "state": run.state,
            "triggered_by": job.triggered_by if job else None,
            "automatic": job.automatic if job else None,
            "gateway": run.accepted,
            "summary": summary,
            "results_dir": str(results_dir) if results_dir else None,
            "result_files": sorted(str(p) for p in results_dir.iterdir()) if results_dir else [],
            "lims_url": self.lims.url,
            "lims": [row.as_dict() for row in jobs],
            "ui_url": f"{self.stack.ui_url}/runs/flow-run/{run.flow_run_id}",
            "webhook_to_running_s": run.webhook_to_running_s,
            "total_s": round(time.monotonic() - self.started, 1),
            "workdir": str(self.workdir),
            "deployment": deployment,
            "collection_id": event.collection_id,
        }
        if run.state != "COMPLETED":
            report["logs"] = self.stack.logs()
        return report, job


@contextlib.contextmanager
def start_demo(workdir: Path | None, stack: LocalStack | None = None) -> Iterator[DemoSession]:
    """A demo in `workdir` (a new temporary folder if None) on the given running stack,
    else on an embedded one started for it (and stopped afterwards)."""
    folder = workdir or Path(tempfile.mkdtemp(prefix="prefect-beamline-demo-"))
    started = time.monotonic()
    if stack is not None:
        yield DemoSession(folder, stack, started)
        return
    with embedded_stack(folder) as own:
        yield DemoSession(folder, own, started)


def print_run(
    report: dict[str, Any], details: list[str], lims_rows: list[dict[str, Any]] | None = None
) -> None:
    """The human-readable report: which run, the technique's `details` lines, where the
    results are (files, LIMS rows: the jobs, or `lims_rows`), the UI."""
    print(f"flow run   {report['flow_run_name']} ({report['flow_run_id']})  {report['state']}")
    print(f"started by {report['triggered_by']} (automatic={report['automatic']})")
    print(f"webhook -> running in {report['webhook_to_running_s']} s; total {report['total_s']} s")
    print("", *details, sep="\n")
    print(f"\nresults    {report['results_dir']}")
    for path in report["result_files"]:
        print(f"           {path}")
    print(f"LIMS       {report['lims_url']}")
    for row in report["lims"] if lims_rows is None else lims_rows:
        print(f"           {json.dumps(row, default=str)}")
    print(f"UI         {report['ui_url']}")
    if "logs" in report:
        print(f"\nlogs of the stack:\n{report['logs']}")
