"""The cryo-EM LIMS rows (Movie, MotionCorrection + drift, CTF) on every database."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.events import CollectionEventKind
from prefect_beamline.lims import Lims
from prefect_beamline.techniques.em import records
from prefect_beamline.techniques.em.records import CTFResult, EMMovieResult, MotionResult
from tests.helpers import collection_event
from tests.lims.helpers import new_job, start


def announce(lims: Lims, collection_id: int, movie: str) -> None:
    lims.record_data_collection(
        collection_event(
            collection_id,
            technique="em",
            kind=CollectionEventKind.images_ready,
            data_file=movie,
        )
    )


def program(lims: Lims, collection_id: int, run_key: str) -> int:
    job = new_job(
        lims,
        run_key,
        collection_id=collection_id,
        recipe="em-movie",
        parameters={},
        record=False,
    )
    return start(lims, job, programs="motion correction, CTF")


def motion() -> MotionResult:
    return MotionResult(
        drift=[(0.0, 0.0), (1.5, -0.5), (2.5, -1.0)],
        dose_per_frame=1.2,
        dose_weighted=True,
        total_motion=3.1,
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
    assert collection is not None and collection.technique == "em"
    ids = [records.record_movie(lims, 4001, f"/data/em/Movie_{i}.mrc") for i in (1, 2, 3)]
    assert records.record_movie(lims, 4001, "/data/em/Movie_2.mrc", n_frames=40) == ids[1]
    movies = records.movies_for_collection(lims, 4001)
    assert [(m.movie_number, Path(m.path).name) for m in movies] == [
        (1, "Movie_1.mrc"),
        (2, "Movie_2.mrc"),
        (3, "Movie_3.mrc"),
    ]


def test_motion_correction_drift_and_ctf_are_idempotent_per_program(lims: Lims) -> None:
    announce(lims, 4002, "/data/em/Movie_1.mrc")
    movie = records.record_movie(lims, 4002, "/data/em/Movie_1.mrc")
    first = program(lims, 4002, "run-1")
    mc = records.record_motion_correction(lims, first, 4002, movie, motion())
    assert records.record_motion_correction(lims, first, 4002, movie, motion()) == mc
    ctf_id = records.record_ctf(lims, first, mc, ctf(15000))
    assert records.record_ctf(lims, first, mc, ctf(15100)) == ctf_id
    second = program(lims, 4002, "run-2")  # a rerun keeps its own rows
    mc2 = records.record_motion_correction(lims, second, 4002, movie, motion())
    records.record_ctf(lims, second, mc2, ctf(16000))
    lims.finish_program(first, success=True, message="ok")
    results = records.em_results(lims, 4002)
    assert [(r.program_id, r.result.ctf and r.result.ctf.defocus_u) for r in results] == [
        (first, 15100),
        (second, 16000),
    ]
    assert results[0].result.motion.drift == [(0.0, 0.0), (1.5, -0.5), (2.5, -1.0)]
    assert results[0].program_status is True and results[1].program_status is None
    assert results[0].result.ctf is not None
    assert results[0].result.ctf.fit_resolution == pytest.approx(4.1)


def test_a_movie_result_reads_back_as_it_was_recorded(lims: Lims) -> None:
    """The record the analysis builds is the one the LIMS returns (but for what ISPyB
    has no column for: early/late motion, pixel size, timings)."""
    announce(lims, 4003, "/data/em/Movie_1.mrc")
    movie = records.record_movie(lims, 4003, "/data/em/Movie_1.mrc")
    run = program(lims, 4003, "run-1")
    written = EMMovieResult("/data/em/Movie_1.mrc", motion(), ctf(15000))
    mc, ctf_id = records.record_movie_result(lims, run, 4003, movie, written)
    assert records.record_movie_result(lims, run, 4003, movie, written) == (mc, ctf_id)
    (recorded,) = records.em_results(lims, 4003)
    assert recorded.result == written
    assert (recorded.movie.movie_id, recorded.movie.movie_number) == (movie, 1)
    assert recorded.motion_correction_id == mc
    (listed,) = records.movies_for_collection(lims, 4003)
    assert listed.movie_id == movie
