"""The cryo-EM LIMS rows (Movie, MotionCorrection + drift, CTF) on every database."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.events import CollectionEvent, CollectionEventKind, Technique
from prefect_beamline.lims import CTFResult, Lims, MotionResult


def announce(lims: Lims, collection_id: int, movie: str) -> None:
    lims.record_data_collection(
        CollectionEvent(
            event_id=f"e-{movie}",
            kind=CollectionEventKind.images_ready,
            technique=Technique.em,
            beamline="m02",
            visit="bi23047-1",
            collection_id=collection_id,
            data_files=[movie],
        )
    )


def program(lims: Lims, collection_id: int, run_key: str) -> int:
    job = lims.record_processing_job(
        data_collection_id=collection_id,
        recipe="em-movie",
        display_name="em",
        automatic=True,
        triggered_by="test",
        parameters={},
        run_key=run_key,
    )
    return lims.start_program(
        processing_job_id=job, programs="p", command_line="c", environment="e"
    )


def motion(number: int) -> MotionResult:
    return MotionResult(
        movie_number=number,
        drift=[(0.0, 0.0), (1.5, -0.5), (2.5, -1.0)],
        dose_per_frame=1.2,
        dose_weighted=True,
        total_motion=3.1,
        average_motion_per_frame=1.55,
        micrograph_path="/d/processing/m.mrc",
        drift_plot_path="/d/processing/m_drift.png",
        power_spectrum_path="/d/processing/m_PS.png",
        patches=(5, 5),
    )


def ctf(defocus_u: float) -> CTFResult:
    return CTFResult(
        defocus_u=defocus_u,
        defocus_v=defocus_u - 800,
        angle_deg=42.0,
        fit_resolution=4.1,
        cc=0.45,
        amplitude_contrast=0.1,
        box_size=512,
        min_resolution=30,
        max_resolution=4,
        min_defocus=3000,
        max_defocus=50000,
        power_spectrum_path="/d/processing/m_PS.png",
    )


def test_movies_of_one_session_share_its_collection(lims: Lims) -> None:
    for index in (1, 2, 3):
        announce(lims, 4001, f"/data/em/Movie_{index}.mrc")
    collection = lims.get_collection(4001)
    assert collection is not None and collection.technique == Technique.em
    ids = [lims.record_movie(4001, f"/data/em/Movie_{i}.mrc") for i in (1, 2, 3)]
    assert lims.record_movie(4001, "/data/em/Movie_2.mrc", n_frames=40) == ids[1]
    movies = lims.movies_for_collection(4001)
    assert [(m.movie_number, Path(m.path).name) for m in movies] == [
        (1, "Movie_1.mrc"),
        (2, "Movie_2.mrc"),
        (3, "Movie_3.mrc"),
    ]


def test_motion_correction_drift_and_ctf_are_idempotent_per_program(lims: Lims) -> None:
    announce(lims, 4002, "/data/em/Movie_1.mrc")
    movie = lims.record_movie(4002, "/data/em/Movie_1.mrc")
    first = program(lims, 4002, "run-1")
    mc = lims.record_motion_correction(first, 4002, movie, motion(1))
    assert lims.record_motion_correction(first, 4002, movie, motion(1)) == mc
    ctf_id = lims.record_ctf(first, mc, ctf(15000))
    assert lims.record_ctf(first, mc, ctf(15100)) == ctf_id
    second = program(lims, 4002, "run-2")  # a rerun keeps its own rows
    mc2 = lims.record_motion_correction(second, 4002, movie, motion(1))
    lims.record_ctf(second, mc2, ctf(16000))
    lims.finish_program(first, success=True, message="ok")
    results = lims.em_results(4002)
    assert [(r.program_id, r.defocus_u) for r in results] == [(first, 15100), (second, 16000)]
    assert results[0].drift == [(0.0, 0.0), (1.5, -0.5), (2.5, -1.0)]
    assert results[0].program_status is True and results[1].program_status is None
    assert results[0].fit_resolution == pytest.approx(4.1)
