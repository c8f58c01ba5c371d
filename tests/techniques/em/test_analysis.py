"""Motion correction and CTF estimation recover the truth of a synthetic session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_beamline.formats.mrc import read_micrograph, write_mrc
from prefect_beamline.techniques.em.demo import angle_difference
from prefect_beamline.techniques.em.movie import MovieSettings, process_movie
from prefect_beamline.techniques.em.synth import SyntheticSession, write_em_session

SETTINGS = dict(patches=(3, 3), ctf_tile=256)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSession:
    return write_em_session(
        tmp_path_factory.mktemp("em"), n_movies=3, n_frames=10, shape=(512, 512), seed=5
    )


@pytest.fixture(scope="module")
def results(session: SyntheticSession) -> list:
    settings = MovieSettings(dose_per_frame=session.dose_per_frame, **SETTINGS)
    return [process_movie(m.path, session.gain_reference, settings) for m in session.movies]


def test_global_shifts_within_half_a_pixel(session: SyntheticSession, results: list) -> None:
    for movie, result in zip(session.movies, results, strict=True):
        error = np.abs(result.motion.global_shifts - movie.shifts).max()
        assert error < 0.5, f"{movie.path.name}: max shift error {error:.2f} px"
        assert np.abs(movie.shifts).max() > 3  # the drift is large enough to matter


def test_defocus_within_two_percent_and_angle_within_five_degrees(
    session: SyntheticSession, results: list
) -> None:
    for movie, result in zip(session.movies, results, strict=True):
        fit, truth = result.ctf.parameters, movie.ctf
        assert fit.defocus_u == pytest.approx(truth.defocus_u, rel=0.02)
        assert fit.defocus_v == pytest.approx(truth.defocus_v, rel=0.02)
        assert angle_difference(fit.angle_deg, truth.angle_deg) < 5.0
        assert 3.0 < result.ctf.fit_resolution_angstrom < 10.0
        assert result.ctf.cc > 0.2


def test_patch_motion_sees_the_local_field(session: SyntheticSession, results: list) -> None:
    """The synthetic field rotates the image about its centre: dx grows with -v."""
    result = results[0]
    assert result.motion.patches == (3, 3)
    last = result.motion.coefficients[-1]
    local = session.movies[0].local_motion_px
    # dx = -2 a v, dy = +2 a u at the last frame (synth.em.render_frame)
    assert last[0, 2] == pytest.approx(-2 * local, abs=0.6)
    assert last[1, 1] == pytest.approx(2 * local, abs=0.6)


def test_micrograph_is_written_with_its_pixel_size(tmp_path: Path, results: list) -> None:
    path = write_mrc(tmp_path / "mic.mrc", results[0].micrograph, 1.2)
    image, pixel = read_micrograph(path)
    assert pixel == pytest.approx(1.2)
    np.testing.assert_array_equal(image, results[0].micrograph)


def test_tiff_movies_give_the_same_answer(tmp_path: Path) -> None:
    tiff = write_em_session(
        tmp_path, n_movies=1, n_frames=8, shape=(384, 384), movie_format="tiff", seed=9
    )
    movie = tiff.movies[0]
    settings = MovieSettings(
        pixel_size_angstrom=tiff.pixel_size_angstrom,
        dose_per_frame=tiff.dose_per_frame,
        patches=(2, 2),
        ctf_tile=192,
    )
    result = process_movie(movie.path, tiff.gain_reference, settings)
    assert np.abs(result.motion.global_shifts - movie.shifts).max() < 0.5
    assert result.ctf.parameters.mean_defocus == pytest.approx(movie.ctf.mean_defocus, rel=0.02)


def test_without_dose_weighting_the_sum_keeps_the_mean(session: SyntheticSession) -> None:
    movie = session.movies[0].path
    weighted = process_movie(
        movie, None, MovieSettings(dose_per_frame=1.5, patches=(1, 1), ctf_tile=256)
    )
    plain = process_movie(
        movie,
        None,
        MovieSettings(dose_per_frame=1.5, patches=(1, 1), ctf_tile=256, dose_weighting=False),
    )
    assert weighted.micrograph.mean() == pytest.approx(plain.micrograph.mean(), rel=1e-3)
    # The same image, reweighted at high frequency only.
    correlation = np.corrcoef(weighted.micrograph.ravel(), plain.micrograph.ravel())[0, 1]
    assert 0.8 < correlation < 0.9999
