"""`prefect-beamline demo ptycho`: one synthetic ptychography scan through the whole path.

Starts the embedded stack, writes a synthetic scan with a known object, POSTs the DAQ's
`finished` webhook, waits for the automation-started reconstruction and reports what it
left in files and the LIMS, with the phase error against the known object.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_beamline.demo import daq_event, new_collection_id, print_run, start_demo
from prefect_beamline.events import CollectionEvent
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
    return daq_event(
        "ptycho",
        collection_id,
        scan_file,
        beamline="i14",
        visit="cm12345-1",
        processing_parameters={"iterations": DEMO_ITERATIONS} if parameters is None else parameters,
    )


def run_demo(
    workdir: Path | None = None, *, n_images: int | None = None, stack: LocalStack | None = None
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`);
    `n_images` = positions."""
    with start_demo(workdir, stack) as demo:
        scan = write_ptycho_scan(
            demo.workdir / "data" / "i14" / "cm12345-1",
            n_positions=n_images or DEMO_POSITIONS,
            seed=7,
        )
        event = demo_event(scan.scan_file, new_collection_id())
        report, _ = demo.announce(event, DEPLOYMENT)
        summary = report["summary"]
        nrmse = None
        if summary:
            saved = read_reconstruction(Path(summary["reconstruction_file"]))
            nrmse = round(scan.phase_nrmse(saved.obj), 4)
        results = records.ptycho_results(demo.lims, event.collection_id)
        report.update(
            {
                "n_positions": summary.get("n_positions"),
                "iterations": summary.get("iterations"),
                "final_error": summary.get("final_error"),
                "phase_nrmse_vs_truth": nrmse,
                "lims_ptycho_results": [asdict(result) for result in results],
            }
        )
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    line = (
        f"{report['n_positions']} positions, {report['iterations']} iterations, "
        f"final error {report['final_error']}, "
        f"phase NRMSE vs truth {report['phase_nrmse_vs_truth']}"
    )
    print_run(report, [line], report["lims_ptycho_results"])
