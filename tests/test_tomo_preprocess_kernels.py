"""The preprocessing kernels (`_tomo_preprocess`: flat/dark normalisation with minus-log,
ring filter) against their plain numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from prefect_beamline.ext.tomo_preprocess import normalise, ring_filter

from tests.tomo_reference import reference_normalise, reference_ring_filter

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
