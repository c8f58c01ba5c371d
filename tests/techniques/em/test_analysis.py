"""Motion correction and CTF estimation recover the truth of a synthetic session."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from prefect_beamline.formats.eer import write_eer_movie
from prefect_beamline.formats.mrc import EERRendering, read_micrograph, write_mrc
from prefect_beamline.techniques.em.demo import angle_difference
from prefect_beamline.techniques.em.movie import MovieSettings, process_movie
from prefect_beamline.techniques.em.results_files import write_movie_results, write_tables
from prefect_beamline.techniques.em.session import CTF_STAR, MOTION_STAR
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


def test_relion_reads_the_ctf_image_and_motion_metadata_we_name(
    tmp_path: Path, session: SyntheticSession, results: list
) -> None:
    """rlnCtfImage is the CTFFIND-style MRC power spectrum (`.ctf:mrc`), and
    rlnMicrographMetadata a per-movie motion STAR with the movie, dose and shifts."""
    movie = str(session.movies[0].path)
    settings = MovieSettings(dose_per_frame=session.dose_per_frame, **SETTINGS)
    result = write_movie_results(movie, results[0], settings, tmp_path / "job", "gain.mrc")
    write_tables(result, settings.microscope, tmp_path / "job", tmp_path / "session")
    tables = starfile.read(tmp_path / "job" / CTF_STAR, always_dict=True)
    row = tables["micrographs"].iloc[0]
    ctf_file, _, kind = row["rlnCtfImage"].rpartition(":")
    assert kind == "mrc" and ctf_file.endswith(".ctf")
    with mrcfile.open(ctf_file) as ctf:
        assert ctf.data.shape == (256, 256) and ctf.data.dtype == np.float32
        assert np.isfinite(ctf.data).all() and ctf.data.max() > ctf.data.min()
    motion = starfile.read(tmp_path / "session" / MOTION_STAR, always_dict=True)
    metadata_file = motion["micrographs"]["rlnMicrographMetadata"].iloc[0]
    assert metadata_file == row["rlnMicrographMetadata"]
    metadata = starfile.read(metadata_file, always_dict=True)
    general, shifts = metadata["general"], metadata["global_shift"]
    assert general["rlnMicrographMovieName"] == movie
    assert general["rlnImageSizeZ"] == 10 and general["rlnImageSizeX"] == 512
    assert general["rlnMicrographDoseRate"] == pytest.approx(session.dose_per_frame)
    assert general["rlnMicrographGainName"] == "gain.mrc"
    assert list(shifts["rlnMicrographFrameNumber"]) == list(range(1, 11))
    np.testing.assert_allclose(
        shifts[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy(),
        results[0].motion.global_shifts,
        atol=1e-6,
    )


def test_an_eer_movie_is_processed_in_dose_fractions(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    sensor = (256, 256)
    frames = []
    for _ in range(12):
        positions = np.sort(rng.choice(sensor[0] * sensor[1], 3000, replace=False))
        frames.append((positions, rng.integers(0, 4, 3000), rng.integers(0, 4, 3000)))
    path = write_eer_movie(tmp_path / "falcon.eer", frames, sensor, pixel_size_angstrom=1.6)
    settings = MovieSettings(
        patches=(1, 1), ctf_tile=128, eer=EERRendering(frames_per_group=3, upsampling=2)
    )
    result = process_movie(path, None, settings)
    assert result.n_frames == 4 and result.shape == (512, 512)
    assert result.pixel_size_angstrom == pytest.approx(0.8)
    assert np.isfinite(result.micrograph).all()
