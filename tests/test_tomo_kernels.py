"""The tomography kernels against their numpy references and scikit-image's iradon."""

from __future__ import annotations

import numpy as np
import pytest
from prefect_beamline.ext.tomo import (
    FILTER_NAMES,
    backproject,
    filter_sinograms,
    normalise,
    reconstruct,
    ring_filter,
)
from skimage.transform import iradon

from prefect_beamline.analysis.tomo import circle_mask
from tests.tomo_reference import reference_fbp, reference_normalise, reference_ring_filter

MIN_TRANSMISSION = 1e-6


def raw_scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projections (angle, row, column), flat and dark with the awkward cases a detector
    produces: counts at or below the dark (zero or negative transmission) and a dead
    pixel whose flat is no brighter than its dark."""
    rng = np.random.default_rng(seed)
    flat = rng.uniform(1000, 2000, (5, 33)).astype(np.float32)
    dark = rng.uniform(50, 150, (5, 33)).astype(np.float32)
    projections = rng.integers(0, 2000, (17, 5, 33)).astype(np.uint16)
    projections[:, 0, 0] = 0  # below the dark: negative transmission
    projections[3, 1, 1] = np.uint16(dark[1, 1])  # exactly the dark: zero transmission
    flat[2, 2] = dark[2, 2]  # dead pixel
    flat[3, 3] = dark[3, 3] - 5.0
    return projections, flat, dark


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.float32])
def test_normalise_equals_reference_and_guards_zero_and_negative(dtype: type) -> None:
    projections, flat, dark = raw_scan()
    projections = projections.astype(dtype)
    result = normalise(projections, flat, dark, min_transmission=MIN_TRANSMISSION, n_threads=2)
    expected = reference_normalise(projections, flat, dark, MIN_TRANSMISSION)
    assert result.shape == (5, 17, 33)  # sinogram order
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(result))
    assert result[0, 0, 0] == pytest.approx(-np.log(MIN_TRANSMISSION), rel=1e-6)
    assert np.all(result[2, :, 2] == 0) and np.all(result[3, :, 3] == 0)


def test_normalise_clamps_nan_counts() -> None:
    projections, flat, dark = raw_scan()
    floats = projections.astype(np.float32)
    floats[5, 4, 10] = np.nan
    result = normalise(floats, flat, dark, min_transmission=MIN_TRANSMISSION)
    assert result[4, 5, 10] == pytest.approx(-np.log(MIN_TRANSMISSION), rel=1e-6)


def test_normalise_rejects_mismatched_flat() -> None:
    projections, flat, dark = raw_scan()
    with pytest.raises(ValueError, match="flat shape"):
        normalise(projections, flat[:4], dark)


@pytest.mark.parametrize("width", [3, 9, 31])
def test_ring_filter_equals_reference(width: int) -> None:
    rng = np.random.default_rng(width)
    sinograms = rng.normal(0.5, 0.1, (4, 60, 50)).astype(np.float32)
    sinograms[:, :, 17] += 0.2  # a stripe: a detector column that reads high
    expected = reference_ring_filter(sinograms, width)
    result = ring_filter(sinograms.copy(), width=width, n_threads=2)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_ring_filter_removes_a_stripe_and_keeps_the_sample() -> None:
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    columns = np.arange(64)
    # A point off the axis traces a sine; a bad column adds a constant stripe.
    sample = np.exp(-0.5 * ((columns[None, :] - 32 - 15 * np.cos(angles)[:, None]) / 2.0) ** 2)
    striped = sample.copy()
    striped[:, 40] += 0.3
    result = ring_filter(striped[None].astype(np.float32), width=9)[0]
    assert abs((result - sample)[:, 40].mean()) < 0.02
    assert np.abs(result - sample).max() < 0.1


def test_ring_filter_rejects_even_width() -> None:
    with pytest.raises(ValueError, match="odd"):
        ring_filter(np.zeros((1, 4, 8), dtype=np.float32), width=8)


@pytest.mark.parametrize("filter_name", FILTER_NAMES)
def test_fbp_equals_reference_off_centre(filter_name: str) -> None:
    rng = np.random.default_rng(3)
    sinogram = rng.random((90, 48)).astype(np.float32)
    angles = np.deg2rad(np.linspace(0, 180, 90, endpoint=False))
    centre = 26.37
    result = reconstruct(
        sinogram[None], angles, centre, filter_name=filter_name, circle=False, n_threads=2
    )[0]
    expected = reference_fbp(sinogram, angles, centre, filter_name, 48)
    # Inside the inscribed circle; at its corners a sample landing exactly on the last
    # detector pixel may fall either side of it in floating point.
    inside = circle_mask(48, margin=1)
    scale = np.abs(expected).max()
    assert np.abs(result - expected)[inside].max() < 1e-5 * scale


@pytest.mark.parametrize("filter_name", FILTER_NAMES)
def test_fbp_agrees_with_scikit_image_iradon(filter_name: str) -> None:
    """Same filter, same angles, same centre (iradon's is n//2): within 1e-5 of the range."""
    rng = np.random.default_rng(4)
    n = 96
    sinogram = rng.random((120, n)).astype(np.float32)
    angles_deg = np.linspace(0, 180, 120, endpoint=False)
    expected = iradon(
        sinogram.T.astype(np.float64),
        angles_deg,
        filter_name=filter_name,
        circle=False,
        output_size=n,
    )
    result = reconstruct(
        sinogram[None], np.deg2rad(angles_deg), n // 2, filter_name=filter_name, circle=False
    )[0]
    inside = circle_mask(n, margin=1)
    assert np.abs(result - expected)[inside].max() < 1e-5 * np.abs(expected).max()


def test_fbp_circle_zeroes_outside_and_matches_inside() -> None:
    rng = np.random.default_rng(5)
    sinogram = rng.random((60, 40)).astype(np.float32)
    angles = np.deg2rad(np.linspace(0, 180, 60, endpoint=False))
    with_circle = reconstruct(sinogram[None], angles, 20.0, circle=True)[0]
    without = reconstruct(sinogram[None], angles, 20.0, circle=False)[0]
    inside = circle_mask(40)
    assert np.all(with_circle[~inside] == 0)
    np.testing.assert_allclose(with_circle[inside], without[inside], rtol=1e-5, atol=1e-7)


def test_backprojection_is_the_same_on_one_thread_and_many() -> None:
    rng = np.random.default_rng(6)
    filtered = filter_sinograms(rng.random((3, 50, 70)).astype(np.float32))
    angles = np.deg2rad(np.linspace(0, 180, 50, endpoint=False))
    one = backproject(filtered, angles, 33.2, n_threads=1)
    many = backproject(filtered, angles, 33.2, n_threads=3)
    np.testing.assert_array_equal(one, many)
    assert one.shape == (3, 70, 70)


@pytest.mark.parametrize("circle", [True, False])
def test_portable_and_simd_back_projection_agree(circle: bool) -> None:
    rng = np.random.default_rng(7)
    filtered = filter_sinograms(rng.random((2, 70, 61)).astype(np.float32))
    angles = np.deg2rad(np.linspace(0, 180, 70, endpoint=False))
    simd = backproject(filtered, angles, 31.7, circle=circle, simd=True)
    portable = backproject(filtered, angles, 31.7, circle=circle, simd=False)
    np.testing.assert_allclose(simd, portable, rtol=1e-5, atol=1e-6 * np.abs(portable).max())


def test_backproject_rejects_wrong_angle_count() -> None:
    filtered = filter_sinograms(np.zeros((1, 10, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="angles"):
        backproject(filtered, np.zeros(9), 8.0)
