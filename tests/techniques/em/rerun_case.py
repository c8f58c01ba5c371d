"""A collection the DAQ announces with its own settings, and what a scientist changes in
a rerun (run by tests/e2e/test_rerun.py)."""

from __future__ import annotations

from pathlib import Path

from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.techniques.em.demo import em_event, session_parameters
from prefect_beamline.techniques.em.synth import write_em_session

DEPLOYMENT = "em-processing/em-movie"
DAQ: dict[str, object] = {}  # filled from the synthetic session: optics, dose, gain
UI_CHANGE = ("bfactor", "Bfactor", 300.0)
CLI_CHANGE = ("dose_groups", 3)


def announcement(folder: Path, collection_id: int) -> CollectionEvent:
    session = write_em_session(folder, n_movies=1, n_frames=6, shape=(256, 256), seed=9)
    parameters = session_parameters(session, ctf_tile=128, patches_x=2, patches_y=2)
    DAQ.update(parameters)
    return em_event(
        CollectionEventKind.images_ready, collection_id, session.movie_paths[0], parameters
    )
