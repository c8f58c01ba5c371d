"""A collection the DAQ announces with its own settings, and what a scientist changes in
a rerun (run by tests/e2e/test_rerun.py)."""

from __future__ import annotations

from pathlib import Path

from prefect_beamline.events import CollectionEvent
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection

DEPLOYMENT = "mx-processing/mx-rotation"
DAQ = {"sigma_strong": 4.0, "min_spot_size": 3}
# (field, its form title, new value) changed in the browser, then from the CLI.
UI_CHANGE = ("sigma_background", "Sigma Background", 7.0)
CLI_CHANGE = ("max_spot_size", 500)


def announcement(folder: Path, collection_id: int) -> CollectionEvent:
    data = write_mx_collection(
        folder, n_images=4, seed=3, d_min_true=3.0, detector_distance_mm=50.0
    )
    event = demo_event(data.master_file, collection_id, None)
    return event.model_copy(update={"processing_parameters": DAQ})
