"""`prefect-beamline demo mx`: one MX collection through the whole facility path.

Starts the embedded stack (Prefect server on SQLite, `serve` with the triggers of
`prefect.yaml`, the gateway), writes a synthetic Eiger collection, POSTs the DAQ
webhook over HTTP, waits for the automation-started flow run and reports what it left
in files, the LIMS and the Prefect UI.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prefect_beamline.demo import DemoRun, announce_and_wait
from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.lims import Lims, ProcessingJobSummary
from prefect_beamline.stack import LocalStack, embedded_stack
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.report import PER_IMAGE_FILE, SUMMARY_FILE
from prefect_beamline.techniques.mx.synth import write_mx_collection

DEMO_GRID = GridScan(steps_x=8, steps_y=6, dx_um=20.0, dy_um=20.0, snaked=True)


def demo_event(master_file: Path, collection_id: int, grid: GridScan | None) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for the synthetic collection."""
    return CollectionEvent(
        event_id=f"demo-{uuid.uuid4()}",
        kind=CollectionEventKind.finished,
        technique="mx",
        experiment_type="gridscan" if grid else "rotation",
        beamline="i03",
        visit="mx12345-1",
        collection_id=collection_id,
        data_files=[str(master_file)],
        grid=grid,
    )


def read_per_image(results_dir: Path) -> list[dict[str, Any]]:
    """The per-image table the flow wrote, with numbers as numbers."""
    rows = []
    with (results_dir / PER_IMAGE_FILE).open() as handle:
        for row in csv.DictReader(handle):
            rows.append(
                {
                    "image_number": int(row["image_number"]),
                    "n_spots": int(row["n_spots"]),
                    "total_intensity": float(row["total_intensity"]),
                    "d_min": float(row["d_min_angstrom"]) if row["d_min_angstrom"] else None,
                }
            )
    return rows


def run_demo(
    workdir: Path | None = None, *, grid: bool = False, n_images: int | None = None
) -> dict[str, Any]:
    """Run the demo and return its report (what `--json` prints)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="prefect-beamline-demo-"))
    n_images = n_images or 20
    started = time.monotonic()
    with embedded_stack(workdir) as stack:
        data_dir = workdir / "data" / "i03" / "mx12345-1"
        synthetic = write_mx_collection(
            data_dir,
            name="grid_1" if grid else "xtal_1",
            n_images=n_images,
            grid=DEMO_GRID if grid else None,
            seed=7,
            # A short distance puts the crystal's 3 Å limit on this one-module detector,
            # so the per-image resolution estimate has something to find.
            d_min_true=3.0,
            detector_distance_mm=50.0,
        )
        collection_id = int(time.time() * 1000) % 1_000_000_000
        event = demo_event(synthetic.master_file, collection_id, DEMO_GRID if grid else None)
        deployment = f"mx-processing/mx-{event.experiment_type}"
        run = announce_and_wait(stack, event, deployment)
        lims_url = stack.env["PREFECT_BEAMLINE_LIMS_URL"]
        report = build_report(stack, run, Lims(lims_url), collection_id)
        report.update(
            {
                "webhook_to_running_s": run.webhook_to_running_s,
                "total_s": round(time.monotonic() - started, 1),
                "workdir": str(workdir),
                "deployment": deployment,
                "collection_id": collection_id,
            }
        )
        if run.state != "COMPLETED":
            report["logs"] = stack.logs()
        return report


def build_report(stack: LocalStack, run: DemoRun, lims: Lims, collection_id: int) -> dict[str, Any]:
    """Gather files, LIMS rows and UI links of the finished run into one dictionary."""
    jobs = lims.jobs_for_collection(collection_id)
    job = jobs[-1] if jobs else None
    results_dir = Path(job.results_dir) if job is not None and job.results_dir else None
    per_image = read_per_image(results_dir) if results_dir and results_dir.exists() else []
    summary_file = results_dir / SUMMARY_FILE if results_dir else None
    summary = json.loads(summary_file.read_text()) if summary_file and summary_file.exists() else {}
    return {
        "flow_run_id": run.flow_run_id,
        "state": run.state,
        "triggered_by": job.triggered_by if job else None,
        "automatic": job.automatic if job else None,
        "gateway": run.accepted,
        "n_images": len(per_image),
        "per_image": per_image,
        "summary": summary,
        "results_dir": str(results_dir) if results_dir else None,
        "result_files": sorted(str(p) for p in results_dir.iterdir()) if results_dir else [],
        "lims_url": lims.url,
        "lims": [job_with_image_quality(lims, job_row) for job_row in jobs],
        "ui_url": f"{stack.ui_url}/runs/flow-run/{run.flow_run_id}",
    }


def job_with_image_quality(lims: Lims, job: ProcessingJobSummary) -> dict[str, Any]:
    """A job's LIMS row, with how many ImageQualityIndicators rows its program wrote."""
    rows = records.image_quality(lims, job.program_id) if job.program_id else []
    return {**job.as_dict(), "n_image_quality_rows": len(rows)}


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    print(f"flow run   {report['flow_run_id']}  {report['state']}")
    print(f"started by {report['triggered_by']} (automatic={report['automatic']})")
    print(f"webhook -> running in {report['webhook_to_running_s']} s; total {report['total_s']} s")
    print(f"\n{'image':>6} {'spots':>6} {'intensity':>12} {'d_min (Å)':>10}")
    for row in report["per_image"]:
        d_min = f"{row['d_min']:.2f}" if row["d_min"] else "–"
        number, spots, intensity = row["image_number"], row["n_spots"], row["total_intensity"]
        print(f"{number:>6} {spots:>6} {intensity:>12.0f} {d_min:>10}")
    centre = report["summary"].get("grid_centre")
    if centre:
        print(f"\nX-ray centre (grid steps): x={centre['x']:.2f} y={centre['y']:.2f}")
    print(f"\nresults    {report['results_dir']}")
    for path in report["result_files"]:
        print(f"           {path}")
    print(f"LIMS       {report['lims_url']}")
    for job in report["lims"]:
        print(f"           {json.dumps(job, default=str)}")
    print(f"UI         {report['ui_url']}  (the server stopped with the demo)")
    if "logs" in report:
        print(f"\nlogs of the stack:\n{report['logs']}")
