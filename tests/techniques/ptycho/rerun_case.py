"""A collection the DAQ announces with its own settings, and what a scientist changes in
a rerun (run by tests/e2e/test_rerun.py)."""

from __future__ import annotations

from pathlib import Path

from prefect_beamline.events import CollectionEvent
from prefect_beamline.techniques.ptycho.demo import demo_event
from prefect_beamline.techniques.ptycho.synth import write_ptycho_scan

DEPLOYMENT = "ptycho-processing/ptycho-reconstruction"
DAQ = {"iterations": 4, "iterations_per_checkpoint": 2, "beta": 0.8}
UI_CHANGE = ("iterations", "Iterations", 6)
CLI_CHANGE = ("alpha", 0.9)


def announcement(folder: Path, collection_id: int) -> CollectionEvent:
    scan = write_ptycho_scan(folder, n_positions=16, pattern_size=32, seed=5)
    return demo_event(scan.scan_file, collection_id, DAQ)
