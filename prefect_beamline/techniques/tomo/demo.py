"""`prefect-beamline demo tomo`: one tomography scan through the whole facility path.

Starts the embedded stack (Prefect server on SQLite, `serve` with the triggers of
`prefect.yaml`, the gateway), writes a synthetic NXtomo scan (3-D Shepp-Logan phantom,
off-centre rotation axis, defective detector columns), POSTs the DAQ webhook over HTTP,
waits for the automation-started reconstruction and reports the volume, the centre it
found against the true one, the LIMS rows and the run's UI address.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_beamline.demo import daq_event, new_collection_id, print_run, start_demo
from prefect_beamline.events import CollectionEvent
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.tomo import records
from prefect_beamline.techniques.tomo.synth import write_tomo_scan

DEPLOYMENT = "tomo-processing/tomo-reconstruction"
DEFAULT_PROJECTIONS = 180


def demo_event(scan_file: Path, collection_id: int) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for the synthetic scan."""
    return daq_event("tomo", collection_id, scan_file, beamline="i13", visit="mg12345-1")


def run_demo(
    workdir: Path | None = None, *, n_images: int | None = None, stack: LocalStack | None = None
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`).

    `n_images` is the number of projections (default 180, over 0-180° inclusive).
    """
    with start_demo(workdir, stack) as demo:
        scan = write_tomo_scan(
            demo.workdir / "data" / "i13" / "mg12345-1",
            n_columns=160,
            n_rows=16,
            n_projections=n_images or DEFAULT_PROJECTIONS,
        )
        report, job = demo.announce(demo_event(scan.path, new_collection_id()), DEPLOYMENT)
        tomogram = records.tomogram(demo.lims, job.program_id) if job and job.program_id else None
        summary = report["summary"]
        report.update(
            {
                "n_projections": summary.get("n_projections"),
                "shape": summary.get("shape"),
                "centre_of_rotation": summary.get("centre_of_rotation"),
                "centre_method": summary.get("centre_method"),
                "centre_of_rotation_true": scan.centre_true,
                "tomogram": None if tomogram is None else asdict(tomogram),
            }
        )
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    lines = [
        f"projections        {report['n_projections']}",
        f"volume (z, y, x)   {report['shape']}",
    ]
    centre, true = report["centre_of_rotation"], report["centre_of_rotation_true"]
    if centre is not None:
        lines.append(
            f"centre of rotation {centre:.2f} px ({report['centre_method']}); "
            f"true {true:.2f} px, off by {abs(centre - true):.2f} px"
        )
    if report["tomogram"]:
        lines.append(f"Tomogram           {json.dumps(report['tomogram'], default=str)}")
    print_run(report, lines)
