"""`prefect-beamline demo ptycho`: one synthetic ptychography scan through the whole path.

Starts the embedded stack, writes a synthetic scan with a known object, POSTs the DAQ's
`finished` webhook, waits for the automation-started reconstruction and reports what it
left in files and the LIMS, with the phase error against the known object.
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
from prefect_beamline.techniques.ptycho import records
from prefect_beamline.techniques.ptycho.results_file import read_reconstruction
from prefect_beamline.techniques.ptycho.synth import write_ptycho_scan

DEPLOYMENT = "ptycho-processing/ptycho-reconstruction"
DEMO_POSITIONS = 100
DEMO_ITERATIONS = 100


def demo_event(
    scan_file: Path, collection_id: int, parameters: dict[str, Any] | None = None
) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for a synthetic scan (by default
    with the demo's iteration count)."""
    return CollectionEvent(
        event_id=f"demo-{uuid.uuid4()}",
        kind=CollectionEventKind.finished,
        technique="ptycho",
        beamline="i14",
        visit="cm12345-1",
        collection_id=collection_id,
        data_files=[str(scan_file)],
        processing_parameters={"iterations": DEMO_ITERATIONS} if parameters is None else parameters,
    )


def run_demo(workdir: Path | None = None, *, n_images: int | None = None) -> dict[str, Any]:
    """Run the demo and return its report (what `--json` prints); `n_images` = positions."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="prefect-beamline-demo-"))
    started = time.monotonic()
    with embedded_stack(workdir) as stack:
        scan = write_ptycho_scan(
            workdir / "data" / "i14" / "cm12345-1", n_positions=n_images or DEMO_POSITIONS, seed=7
        )
        collection_id = int(time.time() * 1000) % 1_000_000_000
        run = announce_and_wait(stack, demo_event(scan.scan_file, collection_id), DEPLOYMENT)
        lims_url = stack.env["PREFECT_BEAMLINE_LIMS_URL"]
        lims = Lims(lims_url)
        jobs = lims.jobs_for_collection(collection_id)
        job = jobs[-1] if jobs else None
        results_dir = Path(job.results_dir) if job and job.results_dir else None
        summary_file = results_dir / "summary.json" if results_dir else None
        summary = (
            json.loads(summary_file.read_text()) if summary_file and summary_file.exists() else {}
        )
        nrmse = None
        if summary:
            saved = read_reconstruction(Path(summary["reconstruction_file"]))
            nrmse = round(scan.phase_nrmse(saved.obj), 4)
        report: dict[str, Any] = {
            "flow_run_id": run.flow_run_id,
            "state": run.state,
            "n_positions": summary.get("n_positions"),
            "iterations": summary.get("iterations"),
            "final_error": summary.get("final_error"),
            "phase_nrmse_vs_truth": nrmse,
            "results_dir": str(results_dir) if results_dir else None,
            "result_files": sorted(str(p) for p in results_dir.iterdir()) if results_dir else [],
            "triggered_by": job.triggered_by if job else None,
            "lims_url": lims_url,
            "lims": [j.as_dict() for j in jobs],
            "lims_ptycho_results": [asdict(r) for r in records.ptycho_results(lims, collection_id)],
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
    print(f"started by {report['triggered_by']}")
    print(f"webhook -> running in {report['webhook_to_running_s']} s; total {report['total_s']} s")
    print(
        f"\n{report['n_positions']} positions, {report['iterations']} iterations, "
        f"final error {report['final_error']}, "
        f"phase NRMSE vs truth {report['phase_nrmse_vs_truth']}"
    )
    print(f"\nresults    {report['results_dir']}")
    for path in report["result_files"]:
        print(f"           {path}")
    print(f"LIMS       {report['lims_url']}")
    for row in report["lims_ptycho_results"]:
        print(f"           {json.dumps(row, default=str)}")
    print(f"UI         {report['ui_url']}  (the server stopped with the demo)")
    if "logs" in report:
        print(f"\nlogs of the stack:\n{report['logs']}")
