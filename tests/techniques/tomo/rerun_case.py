"""A collection the DAQ announces with its own settings, and what a scientist changes in
a rerun (run by tests/e2e/test_rerun.py)."""

from __future__ import annotations

from pathlib import Path

from prefect_beamline.events import CollectionEvent
from prefect_beamline.techniques.tomo.demo import demo_event
from prefect_beamline.techniques.tomo.synth import write_tomo_scan

DEPLOYMENT = "tomo-processing/tomo-reconstruction"
DAQ = {"ring_filter_width": 11, "centre_search_radius": 15.0}
UI_CHANGE = ("ring_filter_width", "Ring Filter Width", 13)
CLI_CHANGE = ("filter_name", "hann")


def announcement(folder: Path, collection_id: int) -> CollectionEvent:
    scan = write_tomo_scan(folder, n_columns=64, n_rows=4, n_projections=46)
    event = demo_event(scan.path, collection_id)
    return event.model_copy(update={"processing_parameters": DAQ})
