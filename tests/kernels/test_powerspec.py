"""The power-spectrum averages (`ext/powerspec.py`: elliptical and sector averages for
CTF fitting) and their numpy references (`powerspec_reference`).

Twin tests run one body against both engines on crafted spectra whose averages are
known; the rest compare the kernel with the reference on random spectra.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prefect_beamline.ext.powerspec import elliptical_average, sector_average
from tests.kernels import powerspec_reference

RNG = np.random.default_rng(3)

# (sums, counts) of a half-plane spectrum, by each engine, with the reference's signature.
ELLIPTICAL: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "reference": powerspec_reference.elliptical_average,
    "kernel": elliptical_average,
}
SECTORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "reference": powerspec_reference.sector_average,
    "kernel": sector_average,
}


def one_pixel(kx: int, ky: int, n: int = 64, value: float = 3.0) -> np.ndarray:
    """A half-plane spectrum (n, n//2 + 1), zero but at frequency (kx, ky) (ky wraps)."""
    spectrum = np.zeros((n, n // 2 + 1), dtype=np.float32)
    spectrum[ky % n, kx] = value
    return spectrum


@pytest.mark.parametrize("engine", ELLIPTICAL)
def test_the_radial_average_counts_the_pixels_of_each_ring(engine: str) -> None:
    # Radius bin 0 holds (0, 0) alone; bin 1 (r in [0.5, 1.5)) holds (1, 0), (0, ±1) and
    # (1, ±1) of the half plane kx >= 0.
    spectrum = np.ones((64, 33), dtype=np.float32)
    sums, counts = ELLIPTICAL[engine](spectrum, 1.0, 0.0, 1.0, 33)
    assert counts[0] == 1 and counts[1] == 5
    np.testing.assert_array_equal(sums, counts)


@pytest.mark.parametrize("engine", ELLIPTICAL)
@pytest.mark.parametrize(
    ("quadratic", "expected_bin"),
    [
        ((1.0, 0.0, 1.0), 5),  # r = sqrt(3² + 4²) = 5
        ((4.0, 0.0, 1.0), 7),  # r = sqrt(4·3² + 4²) = 7.21: stretched along kx
        ((1.0, 0.5, 1.0), 6),  # r = sqrt(3² + 2·0.5·3·4 + 4²) = 6.08
    ],
)
def test_one_frequency_lands_in_the_bin_of_its_elliptical_radius(
    engine: str, quadratic: tuple[float, float, float], expected_bin: int
) -> None:
    sums, counts = ELLIPTICAL[engine](one_pixel(3, 4), *quadratic, 33)
    assert np.flatnonzero(sums).tolist() == [expected_bin]
    assert sums[expected_bin] == pytest.approx(3.0)
    assert counts[expected_bin] >= 1  # pixels are counted whatever their value


@pytest.mark.parametrize("engine", SECTORS)
@pytest.mark.parametrize(
    ("kx", "ky", "sector", "radius_bin"),
    [
        (3, -3, 0, 4),  # -45°: the first of 2 sectors (-90°..0°); r = 4.24
        (3, 3, 1, 4),  # +45°
        (4, 0, 1, 4),  # 0° opens the second sector
        (0, 5, 1, 5),  # +90° is the half plane's last angle: clamped into the last sector
        (0, -5, 0, 5),  # -90°
    ],
)
def test_one_frequency_lands_in_the_sector_of_its_angle(
    engine: str, kx: int, ky: int, sector: int, radius_bin: int
) -> None:
    sums, _ = SECTORS[engine](one_pixel(kx, ky), 2, 33)
    assert np.argwhere(sums).tolist() == [[sector, radius_bin]]
    assert sums[sector, radius_bin] == pytest.approx(3.0)


@pytest.mark.parametrize("engine", SECTORS)
def test_the_zero_frequency_is_in_no_sector(engine: str) -> None:
    sums, counts = SECTORS[engine](one_pixel(0, 0), 4, 33)
    assert not sums.any()
    assert counts[:, 0].sum() == 0


@pytest.mark.parametrize("n", [64, 65])
@pytest.mark.parametrize("quadratic", [(1.0, 0.0, 1.0), (1.1, 0.05, 0.9), (0.8, -0.1, 1.2)])
def test_elliptical_average_matches_reference(
    n: int, quadratic: tuple[float, float, float]
) -> None:
    spectrum = RNG.uniform(0, 1, (n, n // 2 + 1)).astype(np.float32)
    if n % 2:
        with pytest.raises(ValueError, match="rfft2 half plane"):
            elliptical_average(spectrum[:, :-1], *quadratic, n_bins=n // 2)
        return
    sums, counts = elliptical_average(spectrum, *quadratic, n_bins=n // 2 + 1)
    ref_sums, ref_counts = powerspec_reference.elliptical_average(spectrum, *quadratic, n // 2 + 1)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)


@pytest.mark.parametrize("n_sectors", [1, 6, 13])
def test_sector_average_matches_reference(n_sectors: int) -> None:
    spectrum = RNG.uniform(0, 1, (96, 49)).astype(np.float32)
    sums, counts = sector_average(spectrum, n_sectors, 49)
    ref_sums, ref_counts = powerspec_reference.sector_average(spectrum, n_sectors, 49)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: elliptical_average(np.ones((64, 32), np.float32), 1, 0, 1, 33),
        r"spectrum must be an rfft2 half plane \(n, n//2 \+ 1\), got shape \(64, 32\)",
    ),
    (
        lambda: sector_average(np.ones((4, 64, 33), np.float32), 2, 33),
        r"spectrum must be an rfft2 half plane \(n, n//2 \+ 1\), got shape \(4, 64, 33\)",
    ),
    (
        lambda: elliptical_average(np.ones((64, 33), np.complex64), 1, 0, 1, 33),
        r"spectrum must be of dtype .*floating point, got complex64",
    ),
    (
        lambda: elliptical_average(np.ones((64, 33), np.float32), np.nan, 0, 1, 33),
        r"a must be finite, got nan",
    ),
    (
        lambda: elliptical_average(np.ones((64, 33), np.float32), 1, 0, 1, 0),
        r"n_bins must be at least 1, got 0",
    ),
    (
        lambda: sector_average(np.ones((64, 33), np.float32), 0, 33),
        r"n_sectors must be at least 1, got 0",
    ),
    (
        lambda: sector_average(np.ones((64, 33), np.float32), 2, -1),
        r"n_bins must be at least 1, got -1",
    ),
]


def test_a_spectrum_that_is_not_an_array_is_named() -> None:
    with pytest.raises(TypeError, match="spectrum must be a numpy array, got list"):
        elliptical_average([[1.0]], 1, 0, 1, 1)
