"""`prefect-beamline demo ptycho`: one synthetic ptychography scan through the whole path.

Starts the embedded stack, writes a synthetic scan with a known object, POSTs the DAQ's
`finished` webhook, waits for the automation-started reconstruction and reports what it
left in files and the LIMS, with the phase error against the known object.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_beamline.demo import (
    announce_and_wait,
    demo_stack,
    demo_workdir,
    new_collection_id,
    print_run_footer,
    print_run_header,
    run_report,
    stack_lims,
)
from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.stack import LocalStack
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


def run_demo(
    workdir: Path | None = None, *, n_images: int | None = None, stack: LocalStack | None = None
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`);
    `n_images` = positions."""
    workdir = demo_workdir(workdir)
    started = time.monotonic()
    with demo_stack(workdir, stack) as running:
        scan = write_ptycho_scan(
            workdir / "data" / "i14" / "cm12345-1", n_positions=n_images or DEMO_POSITIONS, seed=7
        )
        collection_id = new_collection_id()
        run = announce_and_wait(running, demo_event(scan.scan_file, collection_id), DEPLOYMENT)
        report, _ = run_report(
            running,
            run,
            collection_id=collection_id,
            deployment=DEPLOYMENT,
            started=started,
            workdir=workdir,
        )
        summary = report["summary"]
        nrmse = None
        if summary:
            saved = read_reconstruction(Path(summary["reconstruction_file"]))
            nrmse = round(scan.phase_nrmse(saved.obj), 4)
        lims = stack_lims(running)
        report.update(
            {
                "n_positions": summary.get("n_positions"),
                "iterations": summary.get("iterations"),
                "final_error": summary.get("final_error"),
                "phase_nrmse_vs_truth": nrmse,
                "lims_ptycho_results": [
                    asdict(r) for r in records.ptycho_results(lims, collection_id)
                ],
            }
        )
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    print_run_header(report)
    print(
        f"\n{report['n_positions']} positions, {report['iterations']} iterations, "
        f"final error {report['final_error']}, "
        f"phase NRMSE vs truth {report['phase_nrmse_vs_truth']}"
    )
    print_run_footer(report, report["lims_ptycho_results"])
