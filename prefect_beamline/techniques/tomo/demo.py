"""`prefect-beamline demo tomo`: one tomography scan through the whole facility path.

Starts the embedded stack (Prefect server on SQLite, `serve` with the triggers of
`prefect.yaml`, the gateway), writes a synthetic NXtomo scan (3-D Shepp-Logan phantom,
off-centre rotation axis, defective detector columns), POSTs the DAQ webhook over HTTP,
waits for the automation-started reconstruction and reports the volume, the centre it
found against the true one, the LIMS rows and the run's UI address.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_beamline.demo import announce_and_wait
from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.lims import Lims
from prefect_beamline.stack import embedded_stack
from prefect_beamline.techniques.tomo import records
from prefect_beamline.techniques.tomo.report import SUMMARY_FILE
from prefect_beamline.techniques.tomo.synth import write_tomo_scan

DEPLOYMENT = "tomo-processing/tomo-reconstruction"
DEFAULT_PROJECTIONS = 180


def demo_event(scan_file: Path, collection_id: int) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for the synthetic scan."""
    return CollectionEvent(
        event_id=f"demo-{uuid.uuid4()}",
        kind=CollectionEventKind.finished,
        technique="tomo",
        beamline="i13",
        visit="mg12345-1",
        collection_id=collection_id,
        data_files=[str(scan_file)],
    )


def run_demo(workdir: Path | None = None, *, n_images: int | None = None) -> dict[str, Any]:
    """Run the demo and return its report (what `--json` prints).

    `n_images` is the number of projections (default 180, over 0-180° inclusive).
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="prefect-beamline-demo-"))
    started = time.monotonic()
    with embedded_stack(workdir) as stack:
        data_dir = workdir / "data" / "i13" / "mg12345-1"
        scan = write_tomo_scan(
            data_dir, n_columns=160, n_rows=16, n_projections=n_images or DEFAULT_PROJECTIONS
        )
        collection_id = int(time.time() * 1000) % 1_000_000_000
        run = announce_and_wait(stack, demo_event(scan.path, collection_id), DEPLOYMENT)
        lims_url = stack.env["PREFECT_BEAMLINE_LIMS_URL"]
        lims = Lims(lims_url)
        jobs = lims.jobs_for_collection(collection_id)
        job = jobs[-1] if jobs else None
        tomogram = records.tomogram(lims, job.program_id) if job and job.program_id else None
        results_dir = Path(job.results_dir) if job and job.results_dir else None
        summary_file = results_dir / SUMMARY_FILE if results_dir else None
        summary = (
            json.loads(summary_file.read_text()) if summary_file and summary_file.exists() else {}
        )
        report: dict[str, Any] = {
            "flow_run_id": run.flow_run_id,
            "state": run.state,
            "triggered_by": job.triggered_by if job else None,
            "automatic": job.automatic if job else None,
            "gateway": run.accepted,
            "n_projections": summary.get("n_projections"),
            "shape": summary.get("shape"),
            "centre_of_rotation": summary.get("centre_of_rotation"),
            "centre_method": summary.get("centre_method"),
            "centre_of_rotation_true": scan.centre_true,
            "summary": summary,
            "results_dir": str(results_dir) if results_dir else None,
            "result_files": sorted(str(p) for p in results_dir.iterdir()) if results_dir else [],
            "lims_url": lims_url,
            "lims": [row.as_dict() for row in jobs],
            "tomogram": None if tomogram is None else asdict(tomogram),
            "ui_url": f"{stack.ui_url}/runs/flow-run/{run.flow_run_id}",
            "webhook_to_running_s": run.webhook_to_running_s,
            "total_s": round(time.monotonic() - started, 1),
            "workdir": str(workdir),
            "deployment": DEPLOYMENT,
            "collection_id": collection_id,
        }
        if run.state != "COMPLETED":
            report["logs"] = stack.logs()
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    print(f"flow run   {report['flow_run_id']}  {report['state']}")
    print(f"started by {report['triggered_by']} (automatic={report['automatic']})")
    print(f"webhook -> running in {report['webhook_to_running_s']} s; total {report['total_s']} s")
    print(f"\nprojections        {report['n_projections']}")
    print(f"volume (z, y, x)   {report['shape']}")
    centre, true = report["centre_of_rotation"], report["centre_of_rotation_true"]
    if centre is not None:
        print(
            f"centre of rotation {centre:.2f} px ({report['centre_method']}); "
            f"true {true:.2f} px, off by {abs(centre - true):.2f} px"
        )
    print(f"\nresults    {report['results_dir']}")
    for path in report["result_files"]:
        print(f"           {path}")
    print(f"LIMS       {report['lims_url']}")
    for job in report["lims"]:
        print(f"           {json.dumps(job, default=str)}")
    if report["tomogram"]:
        print(f"Tomogram   {json.dumps(report['tomogram'], default=str)}")
    print(f"UI         {report['ui_url']}  (the server stopped with the demo)")
    if "logs" in report:
        print(f"\nlogs of the stack:\n{report['logs']}")
