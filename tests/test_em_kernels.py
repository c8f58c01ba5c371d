"""The cryo-EM kernels match their numpy references (tests/em_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from prefect_beamline.ext.motioncor import (
    cross_spectra,
    dose_accumulate,
    dose_normalise,
    gain_bin,
    half_inverse_critical_exposure,
    shift_accumulate,
    voltage_scale,
)
from prefect_beamline.ext.powerspec import elliptical_average, sector_average

from prefect_beamline.analysis.em import dose_groups
from tests import em_reference

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.float32])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_gain_bin_matches_reference(dtype: type, factor: int) -> None:
    raw = RNG.integers(0, 100, (37, 50)).astype(dtype)
    gain = RNG.uniform(0.5, 1.5, raw.shape).astype(np.float32)
    expected = em_reference.gain_bin(raw, gain, factor)
    np.testing.assert_allclose(gain_bin(raw, gain, factor), expected, rtol=1e-5)
    np.testing.assert_allclose(
        gain_bin(raw, None, factor), em_reference.gain_bin(raw, None, factor), rtol=1e-5
    )


@pytest.mark.parametrize(
    "coefficients",
    [
        ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]),
        ([2.25, 0, 0, 0, 0, 0], [-1.5, 0, 0, 0, 0, 0]),
        ([0.3, 1.2, -0.7, 0.5, 0.4, -0.2], [-0.4, 0.3, 0.9, -0.6, 0.1, 0.3]),
        ([40.0, 0, 0, 0, 0, 0], [-45.0, 0, 0, 0, 0, 0]),  # beyond the edge: clamped
    ],
)
@pytest.mark.parametrize("tile", [1, 8, 16])
def test_shift_accumulate_matches_bilinear_reference(
    coefficients: tuple[list[float], list[float]], tile: int
) -> None:
    raw = RNG.integers(0, 1000, (33, 41)).astype(np.uint16)
    gain = RNG.uniform(0.8, 1.2, raw.shape).astype(np.float32)
    cx, cy = (np.array(c, dtype=np.float64) for c in coefficients)
    out = np.full(raw.shape, 5.0, dtype=np.float32)
    shift_accumulate(raw, gain, cx, cy, out, tile=tile)
    expected = 5.0 + em_reference.shift_sample(raw, gain, cx, cy, tile)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_shift_accumulate_integer_shift_is_exact() -> None:
    raw = RNG.integers(0, 255, (20, 30)).astype(np.uint8)
    out = np.zeros(raw.shape, dtype=np.float32)
    shift_accumulate(raw, None, np.array([3.0, 0, 0, 0, 0, 0]), np.array([2.0, 0, 0, 0, 0, 0]), out)
    np.testing.assert_array_equal(out[:-2, :-3], raw[2:, 3:].astype(np.float32))


def test_dose_weighting_matches_reference() -> None:
    shape = (48, 64)
    frames = RNG.normal(10, 3, (7, *shape)).astype(np.float32)
    groups = dose_groups(7, 3)
    pixel, dose_per_frame, kv = 1.1, 2.0, 200.0
    acc = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    weight_sq = np.zeros(acc.shape, dtype=np.float32)
    inverse = half_inverse_critical_exposure(shape, pixel, kv)
    sums, doses, counts = [], [], []
    for group in groups:
        total = frames[group.start : group.stop].sum(axis=0)
        dose = dose_per_frame * 0.5 * (group.start + group.stop)
        dose_accumulate(
            scipy.fft.rfft2(total),
            acc,
            weight_sq,
            inverse,
            dose=dose,
            n_frames=len(group),
        )
        sums.append(total)
        doses.append(dose)
        counts.append(len(group))
    dose_normalise(acc, weight_sq, 7)
    result = scipy.fft.irfft2(acc, s=shape)
    expected = em_reference.dose_weighted_sum(sums, doses, counts, pixel, voltage_scale(kv))
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-3)
    # k = 0 is never attenuated: the mean of the weighted sum is that of the plain sum.
    assert result.mean() == pytest.approx(frames.sum(axis=0).mean(), rel=1e-5)


def test_dose_weighting_damps_high_frequencies_of_late_frames() -> None:
    acc = np.zeros((64, 33), dtype=np.complex64)
    weight_sq = np.zeros(acc.shape, dtype=np.float32)
    spectrum = np.ones(acc.shape, dtype=np.complex64)
    inverse = half_inverse_critical_exposure((64, 64), 1.0, 300)
    dose_accumulate(spectrum, acc, weight_sq, inverse, dose=40.0, n_frames=1)
    assert acc[0, 0].real == pytest.approx(1.0)
    assert abs(acc[0, 32]) < 0.01  # Nyquist after 40 e/Å²: almost nothing left


@pytest.mark.parametrize("n", [64, 65])
@pytest.mark.parametrize("quadratic", [(1.0, 0.0, 1.0), (1.1, 0.05, 0.9), (0.8, -0.1, 1.2)])
def test_elliptical_average_matches_reference(n: int, quadratic: tuple[float, ...]) -> None:
    spectrum = RNG.uniform(0, 1, (n, n // 2 + 1)).astype(np.float32)
    if n % 2:
        with pytest.raises(ValueError, match="rfft2 half plane"):
            elliptical_average(spectrum[:, :-1], *quadratic, n_bins=n // 2)
        return
    sums, counts = elliptical_average(spectrum, *quadratic, n_bins=n // 2 + 1)
    ref_sums, ref_counts = em_reference.elliptical_average(spectrum, *quadratic, n // 2 + 1)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)


@pytest.mark.parametrize("n_sectors", [1, 6, 13])
def test_sector_average_matches_reference(n_sectors: int) -> None:
    spectrum = RNG.uniform(0, 1, (96, 49)).astype(np.float32)
    sums, counts = sector_average(spectrum, n_sectors, 49)
    ref_sums, ref_counts = em_reference.sector_average(spectrum, n_sectors, 49)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)


def test_kernels_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="dtype"):
        gain_bin(np.zeros((4, 4), dtype=np.float64), None, 1)
    with pytest.raises(ValueError, match="gain shape"):
        gain_bin(np.zeros((4, 4), dtype=np.uint8), np.ones((3, 3), np.float32), 1)
    with pytest.raises(ValueError, match="out must be"):
        shift_accumulate(
            np.zeros((4, 4), np.uint8), None, np.zeros(6), np.zeros(6), np.zeros((4, 4))
        )


def test_cross_spectra_matches_reference() -> None:
    shape = (24, 30)
    frames = RNG.normal(0, 1, (5, *shape)).astype(np.float32)
    spectra = scipy.fft.rfft2(frames).astype(np.complex64)
    weight = RNG.uniform(0, 1, spectra.shape[1:]).astype(np.float32)
    shifts = RNG.uniform(-3, 3, (5, 2))
    ky = np.fft.fftfreq(shape[0])
    kx = np.fft.rfftfreq(shape[1])
    phase_x = np.exp(2j * np.pi * shifts[:, :1] * kx[None, :]).astype(np.complex64)
    phase_y = np.exp(2j * np.pi * shifts[:, 1:] * ky[None, :]).astype(np.complex64)
    result = cross_spectra(spectra, weight, phase_x, phase_y)
    expected = em_reference.cross_spectra(spectra, weight, shifts, shape)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-3)
