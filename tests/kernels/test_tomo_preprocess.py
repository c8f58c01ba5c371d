"""The preprocessing kernels (`_tomo_preprocess`: flat/dark normalisation with minus-log,
ring filter) and their plain numpy/scipy references.

Twin tests run one body against both engines on crafted scans whose answer is known;
the rest compare the kernel with the reference on random scans.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prefect_beamline.ext.tomo_preprocess import normalise, ring_filter
from tests.kernels.tomo_preprocess_reference import reference_normalise, reference_ring_filter

MIN_TRANSMISSION = 1e-6


def kernel_normalise(
    projections: np.ndarray, flat: np.ndarray, dark: np.ndarray, min_transmission: float
) -> np.ndarray:
    return normalise(projections, flat, dark, min_transmission=min_transmission, n_threads=2)


def kernel_ring_filter(sinograms: np.ndarray, width: int) -> np.ndarray:
    return ring_filter(sinograms.copy(), width=width, n_threads=2)


# Sinograms (row, angle, column) from projections (angle, row, column), by each engine.
NORMALISE: dict[str, Callable[..., np.ndarray]] = {
    "reference": reference_normalise,
    "kernel": kernel_normalise,
}
# Sinograms with their stripes removed (the input is left alone), by each engine.
RING_FILTER: dict[str, Callable[..., np.ndarray]] = {
    "reference": reference_ring_filter,
    "kernel": kernel_ring_filter,
}


def scan_of_known_attenuation() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(projections, flat, dark, line integrals): counts = dark + (flat - dark) e^-integral,
    the line integral different for every (angle, row, column)."""
    rng = np.random.default_rng(20)
    integrals = rng.uniform(0.0, 3.0, (7, 4, 9))
    dark = np.full((4, 9), 100.0, dtype=np.float32)
    flat = rng.uniform(1000.0, 2000.0, (4, 9)).astype(np.float32)
    projections = (dark + (flat - dark) * np.exp(-integrals)).astype(np.float32)
    return projections, flat, dark, integrals


@pytest.mark.parametrize("engine", NORMALISE)
def test_normalise_recovers_known_line_integrals_in_sinogram_order(engine: str) -> None:
    projections, flat, dark, integrals = scan_of_known_attenuation()
    result = NORMALISE[engine](projections, flat, dark, MIN_TRANSMISSION)
    assert result.shape == (4, 7, 9) and result.dtype == np.float32
    np.testing.assert_allclose(result, integrals.transpose(1, 0, 2), rtol=0, atol=2e-4)


@pytest.mark.parametrize("engine", NORMALISE)
def test_normalise_guards_dark_counts_dead_pixels_and_nan(engine: str) -> None:
    projections, flat, dark, _ = scan_of_known_attenuation()
    projections[2, 1, 3] = dark[1, 3] - 10  # below the dark: negative transmission
    projections[4, 0, 0] = dark[0, 0]  # exactly the dark: zero transmission
    projections[5, 3, 8] = np.nan
    flat[2, 5] = dark[2, 5]  # dead pixel: no open beam
    result = NORMALISE[engine](projections, flat, dark, MIN_TRANSMISSION)
    clamped = pytest.approx(-np.log(MIN_TRANSMISSION), rel=1e-6)
    assert result[1, 2, 3] == clamped and result[0, 4, 0] == clamped and result[3, 5, 8] == clamped
    assert np.all(result[2, :, 5] == 0)


@pytest.mark.parametrize("engine", RING_FILTER)
@pytest.mark.parametrize("width", [3, 9])
def test_a_stripe_on_a_flat_sinogram_is_removed_entirely(engine: str, width: int) -> None:
    sinograms = np.full((2, 30, 40), 0.5, dtype=np.float32)
    sinograms[:, :, 17] += 0.2  # one detector column reads high at every angle
    result = RING_FILTER[engine](sinograms, width)
    np.testing.assert_allclose(result, 0.5, rtol=0, atol=1e-6)
    assert sinograms[0, 0, 17] == pytest.approx(0.7)  # the input is left alone


@pytest.mark.parametrize("engine", RING_FILTER)
def test_a_smooth_ramp_across_columns_is_left_alone(engine: str) -> None:
    # The median of a linear ramp's window is its centre (edges repeat the end column).
    ramp = np.linspace(0.0, 1.0, 40, dtype=np.float32)
    sinograms = np.broadcast_to(ramp, (2, 30, 40)).astype(np.float32)
    np.testing.assert_allclose(RING_FILTER[engine](sinograms, 9), sinograms, rtol=0, atol=1e-6)


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


PROJECTIONS = np.zeros((3, 4, 5), dtype=np.uint16)
FLAT = np.ones((4, 5), dtype=np.float32)
DARK = np.zeros((4, 5), dtype=np.float32)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: normalise(PROJECTIONS[0], FLAT, DARK),
        r"projections must be 3-D \(angle, row, column\), got shape \(4, 5\)",
    ),
    (
        lambda: normalise(PROJECTIONS.astype(np.int16), FLAT, DARK),
        r"projections must be of dtype uint16, uint32 or float32, got int16",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT.T, DARK),
        r"flat shape \(5, 4\) differs from the projections' \(row, column\) shape "
        r"\(4, 5\)",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK[:3]),
        r"dark shape \(3, 5\) differs from the projections' \(row, column\) shape",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT.astype(np.complex64), DARK),
        r"flat must be of dtype .*floating point, got complex64",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK, out=np.zeros((3, 4, 5), np.float32)),
        r"out shape \(3, 4, 5\) differs from the sinograms' \(row, angle, column\) shape "
        r"\(4, 3, 5\)",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK, out=np.zeros((4, 3, 5), np.float64)),
        r"out must be of dtype float32, got float64",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK, min_transmission=1.0),
        r"min_transmission must be in \(0, 1\), got 1.0",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK, min_transmission=float("nan")),
        r"min_transmission must be finite",
    ),
    (
        lambda: normalise(PROJECTIONS, FLAT, DARK, n_threads=-1),
        r"n_threads must be at least 0, got -1",
    ),
    (
        lambda: ring_filter(np.zeros((4, 5), np.float32)),
        r"sinograms must be 3-D \(row, angle, column\), got shape \(4, 5\)",
    ),
    (
        lambda: ring_filter(np.zeros((1, 4, 5), np.float64)),
        r"sinograms must be of dtype float32, got float64",
    ),
    (
        lambda: ring_filter(np.zeros((1, 5, 4), np.float32).transpose(0, 2, 1)),
        r"sinograms must be C-contiguous",
    ),
    (
        lambda: ring_filter(np.zeros((1, 4, 5), np.float32), width=1),
        r"ring filter width must be an odd number >= 3, got 1",
    ),
]


def test_a_fractional_ring_filter_width_is_refused() -> None:
    with pytest.raises(TypeError, match="width must be an integer, got 9.0"):
        ring_filter(np.zeros((1, 4, 5), np.float32), width=9.0)


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_use_every_core_and_give_the_same_sinograms(
    n_threads: int | None,
) -> None:
    projections, flat, dark = raw_scan()
    np.testing.assert_array_equal(
        normalise(projections, flat, dark, n_threads=n_threads),
        normalise(projections, flat, dark, n_threads=1),
    )
    sinograms = np.random.default_rng(9).normal(0.5, 0.1, (4, 20, 30)).astype(np.float32)
    np.testing.assert_array_equal(
        ring_filter(sinograms.copy(), n_threads=n_threads),
        ring_filter(sinograms.copy(), n_threads=1),
    )


def test_the_vectorised_log_is_within_its_stated_error_of_numpys() -> None:
    """normalise's float32 log (ext/include/_normalise_row.h): with flat 1 and dark 0 the
    transmission is the count itself; over 1e-6..1e6 the result is -log to 1.5e-7 of
    max(1, |log|), about one float32 ulp."""
    counts = np.geomspace(1e-6, 1e6, 200_003).astype(np.float32).reshape(1, 1, -1)
    flat = np.ones((1, counts.shape[2]), dtype=np.float32)
    dark = np.zeros_like(flat)
    result = normalise(counts, flat, dark, min_transmission=1e-7)[0, 0]
    exact = -np.log(counts[0, 0].astype(np.float64))
    assert np.all(np.abs(result - exact) <= 1.5e-7 * np.maximum(1.0, np.abs(exact)))
