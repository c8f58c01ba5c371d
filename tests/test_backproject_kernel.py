"""The back-projection kernel (`_backproject`, filtered back projection) against its
numpy reference and scikit-image's iradon."""

from __future__ import annotations

import numpy as np
import pytest
from prefect_beamline.ext.backproject import (
    FILTER_NAMES,
    backproject,
    filter_sinograms,
    reconstruct,
)
from skimage.transform import iradon

from prefect_beamline.analysis.tomo import circle_mask
from tests.tomo_reference import reference_fbp


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
