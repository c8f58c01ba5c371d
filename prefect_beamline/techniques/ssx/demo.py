"""`prefect-beamline demo ssx`: one serial collection through the whole facility path.

Starts the embedded stack, writes a synthetic jet collection with known hits, POSTs the
DAQ webhook, waits for the automation-started flow run and reports the hit rate, the
CrystFEL files and the LIMS rows it left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect_beamline.demo import daq_event, new_collection_id, print_run, start_demo
from prefect_beamline.events import CollectionEvent
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.ssx import records
from prefect_beamline.techniques.ssx.crystfel import CXI_FILE, read_cxi_peaks
from prefect_beamline.techniques.ssx.synth import write_serial_collection

DEPLOYMENT = "ssx-processing/ssx-processing"


def demo_event(master_file: Path, collection_id: int, **processing: object) -> CollectionEvent:
    """The `finished` announcement a DAQ would send for the synthetic jet collection."""
    return daq_event(
        "ssx",
        collection_id,
        master_file,
        beamline="i24",
        visit="mx23456-1",
        experiment_type="jet",
        processing_parameters=dict(processing),
    )


def run_demo(
    workdir: Path | None = None, *, n_images: int | None = None, stack: LocalStack | None = None
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`)."""
    with start_demo(workdir, stack) as demo:
        synthetic = write_serial_collection(
            demo.workdir / "data" / "i24" / "mx23456-1",
            name="jet_1",
            n_frames=n_images or 60,
            hit_fraction=0.3,
            seed=7,
        )
        event = demo_event(synthetic.master_file, new_collection_id(), frames_per_chunk=20)
        report, job = demo.announce(event, DEPLOYMENT)
        summary = report["summary"]
        report["n_frames"] = summary.get("n_frames")
        report["n_hits"] = summary.get("n_hits")
        report["hit_rate"] = summary.get("hit_rate")
        report["true_hits"] = int(synthetic.is_hit.sum())
        cxi = Path(report["results_dir"] or ".", CXI_FILE)
        report["cxi_peaks_per_hit"] = [len(p) for p in read_cxi_peaks(cxi)] if cxi.is_file() else []
        program = job.program_id if job else None
        result = records.ssx_result(demo.lims, program) if program else None
        report["lims_hit_rate"] = result.hitRate if result else None
        report["lims_chunks"] = len(records.chunk_hit_rates(demo.lims, program)) if program else 0
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    lines = [
        f"frames {report['n_frames']}, hits {report['n_hits']} "
        f"(hit rate {100 * (report['hit_rate'] or 0):.1f} %; synthetic truth "
        f"{report['true_hits']} hits)",
        f"CXI hits for CrystFEL: {len(report['cxi_peaks_per_hit'])} events, peaks per hit "
        f"{report['cxi_peaks_per_hit']}",
        f"LIMS: SSXProcessingResult.hitRate {report['lims_hit_rate']}, "
        f"{report['lims_chunks']} SSXChunkHitRate rows",
    ]
    print_run(report, lines)
