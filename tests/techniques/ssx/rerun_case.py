"""A collection the DAQ announces with its own settings, and what a scientist changes in
a rerun (run by tests/e2e/test_rerun.py)."""

from __future__ import annotations

from pathlib import Path

from prefect_beamline.events import CollectionEvent
from prefect_beamline.techniques.ssx.demo import DEPLOYMENT, demo_event
from prefect_beamline.techniques.ssx.synth import write_serial_collection

__all__ = ["DEPLOYMENT", "announcement"]
DAQ = {"min_snr": 5.0, "min_peaks": 8}
# (field, its form title, new value) changed in the browser, then from the CLI.
UI_CHANGE = ("adc_threshold", "Adc Threshold", 3.0)
CLI_CHANGE = ("n_bins", 500)


def announcement(folder: Path, collection_id: int) -> CollectionEvent:
    data = write_serial_collection(folder, n_frames=8, frames_per_data_file=8, seed=5)
    event = demo_event(data.master_file, collection_id)
    return event.model_copy(update={"processing_parameters": DAQ})
