"""`prefect-beamline demo mx`: one MX collection through the whole facility path.

Starts the embedded stack (Prefect server on SQLite, `serve` with the triggers of
`prefect.yaml`, the gateway), writes a synthetic Eiger collection, POSTs the DAQ
webhook over HTTP, waits for the automation-started flow run and reports what it left
in files, the LIMS and the Prefect UI.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from prefect_beamline.demo import daq_event, new_collection_id, print_run, start_demo
from prefect_beamline.events import CollectionEvent, GridScan
from prefect_beamline.lims import Lims, ProcessingJobSummary
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.report import PER_IMAGE_FILE
from prefect_beamline.techniques.mx.synth import write_mx_collection

DEMO_GRID = GridScan(steps_x=8, steps_y=6, dx_um=20.0, dy_um=20.0, snaked=True)


def demo_event(master_file: Path, collection_id: int, grid: GridScan | None) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for the synthetic collection."""
    return daq_event(
        "mx",
        collection_id,
        master_file,
        beamline="i03",
        visit="mx12345-1",
        experiment_type="gridscan" if grid else "rotation",
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
    workdir: Path | None = None,
    *,
    grid: bool = False,
    n_images: int | None = None,
    stack: LocalStack | None = None,
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`)."""
    with start_demo(workdir, stack) as demo:
        synthetic = write_mx_collection(
            demo.workdir / "data" / "i03" / "mx12345-1",
            name="grid_1" if grid else "xtal_1",
            n_images=n_images or 20,
            grid=DEMO_GRID if grid else None,
            seed=7,
            # A short distance puts the crystal's 3 Å limit on this one-module detector,
            # so the per-image resolution estimate has something to find.
            d_min_true=3.0,
            detector_distance_mm=50.0,
        )
        event = demo_event(synthetic.master_file, new_collection_id(), DEMO_GRID if grid else None)
        report, _ = demo.announce(event, f"mx-processing/mx-{event.experiment_type}")
        results_dir = Path(report["results_dir"]) if report["results_dir"] else None
        per_image = read_per_image(results_dir) if results_dir and results_dir.exists() else []
        jobs = demo.lims.jobs_for_collection(event.collection_id)
        report["n_images"] = len(per_image)
        report["per_image"] = per_image
        report["lims"] = [job_with_image_quality(demo.lims, job) for job in jobs]
        return report


def job_with_image_quality(lims: Lims, job: ProcessingJobSummary) -> dict[str, Any]:
    """A job's LIMS row, with how many ImageQualityIndicators rows its program wrote."""
    rows = records.image_quality(lims, job.program_id) if job.program_id else []
    return {**job.as_dict(), "n_image_quality_rows": len(rows)}


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    lines = [f"{'image':>6} {'spots':>6} {'intensity':>12} {'d_min (Å)':>10}"]
    for row in report["per_image"]:
        d_min = f"{row['d_min']:.2f}" if row["d_min"] else "–"
        number, spots, intensity = row["image_number"], row["n_spots"], row["total_intensity"]
        lines.append(f"{number:>6} {spots:>6} {intensity:>12.0f} {d_min:>10}")
    centre = report["summary"].get("grid_centre")
    if centre:
        lines.append(f"\nX-ray centre (grid steps): x={centre['x']:.2f} y={centre['y']:.2f}")
    print_run(report, lines)
