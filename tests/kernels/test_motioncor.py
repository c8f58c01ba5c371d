"""The motion-correction kernels (`ext/motioncor.py`: gain and binning, shifted sums,
dose weighting, cross-spectra) and their numpy references (`motioncor_reference`).

Twin tests run one body against both engines on crafted frames whose answer is known;
the rest compare the kernel with the reference on random frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.fft

from prefect_beamline.ext.motioncor import (
    cross_spectra,
    dose_accumulate,
    dose_normalise,
    gain_bin,
    gain_bin_frames,
    half_inverse_critical_exposure,
    shift_accumulate,
    shift_accumulate_frames,
    voltage_scale,
)
from tests.kernels import motioncor_reference as em_reference

RNG = np.random.default_rng(3)
DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.float32]


def reference_shift_accumulate(
    raw: np.ndarray,
    gain: np.ndarray | None,
    coeff_x: np.ndarray,
    coeff_y: np.ndarray,
    out: np.ndarray,
    tile: int,
) -> None:
    out += em_reference.shift_sample(raw, gain, coeff_x, coeff_y, tile).astype(np.float32)


def kernel_shift_accumulate(
    raw: np.ndarray,
    gain: np.ndarray | None,
    coeff_x: np.ndarray,
    coeff_y: np.ndarray,
    out: np.ndarray,
    tile: int,
) -> None:
    shift_accumulate(raw, gain, coeff_x, coeff_y, out, n_threads=2, tile=tile)


def kernel_dose_weighted_sum(
    group_sums: list[np.ndarray],
    doses: list[float],
    counts: list[int],
    pixel_size: float,
    voltage_kv: float,
) -> np.ndarray:
    """The reference's dose-weighted sum, by dose_accumulate and dose_normalise."""
    shape = group_sums[0].shape
    acc = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    weight_sq = np.zeros(acc.shape, dtype=np.float32)
    inverse = half_inverse_critical_exposure(shape, pixel_size, voltage_kv)
    for total, dose, n in zip(group_sums, doses, counts, strict=True):
        spectrum = scipy.fft.rfft2(total.astype(np.float32))
        dose_accumulate(spectrum, acc, weight_sq, inverse, dose=dose, n_frames=n)
    dose_normalise(acc, weight_sq, sum(counts))
    return np.asarray(scipy.fft.irfft2(acc, s=shape))


def reference_dose_weighted_sum(
    group_sums: list[np.ndarray],
    doses: list[float],
    counts: list[int],
    pixel_size: float,
    voltage_kv: float,
) -> np.ndarray:
    return em_reference.dose_weighted_sum(
        group_sums, doses, counts, pixel_size, voltage_scale(voltage_kv)
    )


def kernel_cross_spectra(
    spectra: np.ndarray, weight: np.ndarray, shifts: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """The reference's signature: the phase factors of `shifts` built here."""
    ky = np.fft.fftfreq(shape[0])
    kx = np.fft.rfftfreq(shape[1])
    phase_x = np.exp(2j * np.pi * shifts[:, :1] * kx[None, :]).astype(np.complex64)
    phase_y = np.exp(2j * np.pi * shifts[:, 1:] * ky[None, :]).astype(np.complex64)
    return cross_spectra(spectra, weight, phase_x, phase_y, n_threads=2)


# Each operation by each engine, with the reference's signature.
GAIN_BIN: dict[str, Callable[..., np.ndarray]] = {
    "reference": em_reference.gain_bin,
    "kernel": gain_bin,
}
SHIFT_ACCUMULATE: dict[str, Callable[..., None]] = {
    "reference": reference_shift_accumulate,
    "kernel": kernel_shift_accumulate,
}
DOSE_WEIGHTED_SUM: dict[str, Callable[..., np.ndarray]] = {
    "reference": reference_dose_weighted_sum,
    "kernel": kernel_dose_weighted_sum,
}
CROSS_SPECTRA: dict[str, Callable[..., np.ndarray]] = {
    "reference": em_reference.cross_spectra,
    "kernel": kernel_cross_spectra,
}


@pytest.mark.parametrize("engine", GAIN_BIN)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_binning_constant_blocks_gives_their_values_times_the_gain(
    engine: str, dtype: type, factor: int
) -> None:
    blocks = np.arange(20, dtype=np.float64).reshape(4, 5) * 5  # 0..95: every dtype holds it
    raw = np.kron(blocks, np.ones((factor, factor)))
    raw = np.pad(raw, ((0, factor - 1), (0, factor - 1)), constant_values=99)  # dropped edge
    gain = np.full(raw.shape, 0.5, dtype=np.float32)
    np.testing.assert_allclose(GAIN_BIN[engine](raw.astype(dtype), gain, factor), blocks * 0.5)
    np.testing.assert_allclose(GAIN_BIN[engine](raw.astype(dtype), None, factor), blocks)


@pytest.mark.parametrize("engine", SHIFT_ACCUMULATE)
@pytest.mark.parametrize("tile", [1, 8])
def test_an_integer_shift_moves_the_frame_and_repeats_its_edges(engine: str, tile: int) -> None:
    raw = RNG.integers(0, 255, (20, 30)).astype(np.uint8)
    out = np.full(raw.shape, 1.0, dtype=np.float32)
    dx, dy = 3.0, 2.0
    SHIFT_ACCUMULATE[engine](
        raw, None, np.array([dx, 0, 0, 0, 0, 0]), np.array([dy, 0, 0, 0, 0, 0]), out, tile
    )
    rows, columns = np.indices(raw.shape)
    moved = raw[np.minimum(rows + 2, 19), np.minimum(columns + 3, 29)]
    np.testing.assert_array_equal(out, 1.0 + moved.astype(np.float32))


@pytest.mark.parametrize("engine", SHIFT_ACCUMULATE)
def test_half_a_pixel_along_a_ramp_samples_between_its_pixels(engine: str) -> None:
    raw = np.tile(np.arange(40, dtype=np.float32) * 2, (24, 1))  # 2 counts a column
    gain = np.full(raw.shape, 1.5, dtype=np.float32)
    out = np.zeros(raw.shape, dtype=np.float32)
    SHIFT_ACCUMULATE[engine](raw, gain, np.array([0.5, 0, 0, 0, 0, 0]), np.zeros(6), out, 8)
    expected = 1.5 * 2 * (np.arange(39) + 0.5)
    np.testing.assert_allclose(out[:, :39], np.tile(expected, (24, 1)), rtol=1e-6)
    np.testing.assert_allclose(out[:, 39], 1.5 * 78)  # the last column repeats


@pytest.mark.parametrize("engine", DOSE_WEIGHTED_SUM)
def test_no_exposure_weights_nothing(engine: str) -> None:
    sums = [RNG.normal(10, 3, (32, 40)) for _ in range(3)]
    result = DOSE_WEIGHTED_SUM[engine](sums, [0.0, 0.0, 0.0], [2, 3, 2], 1.1, 300.0)
    np.testing.assert_allclose(result, sum(sums), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("engine", DOSE_WEIGHTED_SUM)
def test_the_mean_is_never_attenuated(engine: str) -> None:
    # Uniform frames have only the k = 0 component, which dose weighting keeps whole.
    sums = [np.full((32, 40), value) for value in (4.0, 6.0, 9.0)]
    result = DOSE_WEIGHTED_SUM[engine](sums, [5.0, 30.0, 80.0], [1, 1, 1], 1.0, 200.0)
    np.testing.assert_allclose(result, 19.0, rtol=1e-5)


@pytest.mark.parametrize("engine", CROSS_SPECTRA)
def test_two_unshifted_frames_cross_each_other(engine: str) -> None:
    frames = RNG.normal(0, 1, (2, 16, 20)).astype(np.float32)
    spectra = scipy.fft.rfft2(frames).astype(np.complex64)
    weight = np.ones(spectra.shape[1:], dtype=np.float32)
    products = CROSS_SPECTRA[engine](spectra, weight, np.zeros((2, 2)), (16, 20))
    np.testing.assert_allclose(products[0], spectra[0] * np.conj(spectra[1]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(products[1], spectra[1] * np.conj(spectra[0]), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("engine", CROSS_SPECTRA)
def test_a_zero_weight_filters_everything_out(engine: str) -> None:
    spectra = scipy.fft.rfft2(RNG.normal(0, 1, (3, 16, 20))).astype(np.complex64)
    weight = np.zeros(spectra.shape[1:], dtype=np.float32)
    shifts = RNG.uniform(-2, 2, (3, 2))
    assert not np.any(CROSS_SPECTRA[engine](spectra, weight, shifts, (16, 20)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_gain_bin_matches_reference(dtype: type, factor: int) -> None:
    raw: np.ndarray = RNG.integers(0, 100, (37, 50)).astype(dtype)
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
    groups = [range(0, 2), range(2, 5), range(5, 7)]  # 7 frames in 3 dose groups
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


FRAME = np.zeros((8, 10), dtype=np.uint16)
SPECTRUM = np.zeros((8, 6), dtype=np.complex64)
WEIGHT_SQ = np.zeros((8, 6), dtype=np.float32)
INVERSE = np.zeros((8, 6), dtype=np.float32)
SPECTRA = np.zeros((3, 8, 6), dtype=np.complex64)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: gain_bin(np.zeros((2, 4, 4), np.uint8), None, 1),
        r"raw must be 2-D \(ny, nx\), got shape \(2, 4, 4\)",
    ),
    (
        lambda: gain_bin(FRAME.astype(np.uint32), None, 1),
        r"raw must be of dtype uint8, int8, int16, uint16 or float32, got uint32",
    ),
    (
        lambda: gain_bin(FRAME, np.ones((10, 8), np.float32), 2),
        r"gain shape \(10, 8\) differs from raw shape \(8, 10\)",
    ),
    (
        lambda: gain_bin(FRAME, np.ones((8, 10), np.complex64), 2),
        r"gain must be of dtype .*floating point, got complex64",
    ),
    (lambda: gain_bin(FRAME, None, 0), r"factor must be at least 1, got 0"),
    (lambda: gain_bin(FRAME, None, 2, n_threads=-1), r"n_threads must be at least 0"),
    (
        lambda: shift_accumulate(
            FRAME, None, np.zeros(6), np.zeros(6), np.zeros((8, 10), np.float32), tile=0
        ),
        r"tile must be at least 1, got 0",
    ),
    (
        lambda: shift_accumulate(
            FRAME, None, np.zeros(6), np.zeros(6), np.zeros((10, 8), np.float32)
        ),
        r"out shape \(10, 8\) differs from raw shape \(8, 10\)",
    ),
    (
        lambda: shift_accumulate(
            FRAME, None, np.zeros(5), np.zeros(6), np.zeros((8, 10), np.float32)
        ),
        r"coeff_x and coeff_y must each hold 6 coefficients, got shapes \(5,\) and \(6,\)",
    ),
    (
        lambda: shift_accumulate(
            FRAME, None, np.full(6, np.nan), np.zeros(6), np.zeros((8, 10), np.float32)
        ),
        r"coeff_x and coeff_y must be finite",
    ),
    (lambda: voltage_scale(0.0), r"voltage_kv must be greater than 0"),
    (
        lambda: half_inverse_critical_exposure((8, 10), 0.0, 300.0),
        r"pixel_size must be greater than 0",
    ),
    (
        lambda: half_inverse_critical_exposure((8, 10, 3), 1.0, 300.0),
        r"shape must be an image's \(ny, nx\), got \(8, 10, 3\)",
    ),
    (
        lambda: half_inverse_critical_exposure((8, 1), 1.0, 300.0),
        r"shape\[1\] \(nx\) must be at least 2, got 1",
    ),
    (
        lambda: dose_accumulate(
            SPECTRUM.astype(np.complex128), SPECTRUM, WEIGHT_SQ, INVERSE, dose=1, n_frames=1
        ),
        r"group_spectrum must be of dtype complex64, got complex128",
    ),
    (
        lambda: dose_accumulate(
            SPECTRUM, SPECTRUM.copy(), WEIGHT_SQ[:, :5], INVERSE, dose=1, n_frames=1
        ),
        r"weight_sq must be C-contiguous",
    ),
    (
        lambda: dose_accumulate(
            SPECTRUM, SPECTRUM.copy(), WEIGHT_SQ[:4], INVERSE, dose=1, n_frames=1
        ),
        r"weight_sq shape \(4, 6\) differs from group_spectrum shape \(8, 6\)",
    ),
    (
        lambda: dose_accumulate(
            SPECTRUM, SPECTRUM.copy(), WEIGHT_SQ, INVERSE.astype(np.float64), dose=1, n_frames=1
        ),
        r"half_inverse_ne must be of dtype float32, got float64",
    ),
    (
        lambda: dose_accumulate(
            SPECTRUM, SPECTRUM.copy(), WEIGHT_SQ, INVERSE, dose=-1.0, n_frames=1
        ),
        r"dose must be at least 0.0, got -1.0",
    ),
    (
        lambda: dose_accumulate(SPECTRUM, SPECTRUM.copy(), WEIGHT_SQ, INVERSE, dose=1, n_frames=0),
        r"n_frames must be at least 1, got 0",
    ),
    (
        lambda: dose_normalise(SPECTRUM.astype(np.complex128), WEIGHT_SQ, 3),
        r"acc must be of dtype complex64, got complex128",
    ),
    (
        lambda: dose_normalise(SPECTRUM.copy(), WEIGHT_SQ[:4], 3),
        r"weight_sq shape \(4, 6\) differs from acc shape \(8, 6\)",
    ),
    (
        lambda: dose_normalise(SPECTRUM.copy(), WEIGHT_SQ, 0),
        r"n_frames must be at least 1, got 0",
    ),
    (
        lambda: cross_spectra(SPECTRA[0], INVERSE, SPECTRA[:, 0], SPECTRA[:, :, 0]),
        r"spectra must be 3-D \(n, ny, nx//2 \+ 1\), got shape \(8, 6\)",
    ),
    (
        lambda: cross_spectra(SPECTRA, INVERSE[:, :5], SPECTRA[:, 0], SPECTRA[:, :, 0]),
        r"weight shape \(8, 5\) differs from the spectra's \(ny, nxh\) shape \(8, 6\)",
    ),
    (
        lambda: cross_spectra(SPECTRA, INVERSE, SPECTRA[:2, 0], SPECTRA[:, :, 0]),
        r"phase_x shape \(2, 6\) differs from the spectra's \(n, nxh\) shape \(3, 6\)",
    ),
    (
        lambda: cross_spectra(SPECTRA, INVERSE, SPECTRA[:, 0], SPECTRA[:, :4, 0]),
        r"phase_y shape \(3, 4\) differs from the spectra's \(n, ny\) shape \(3, 8\)",
    ),
    (
        lambda: cross_spectra(
            SPECTRA, INVERSE, SPECTRA[:, 0], SPECTRA[:, :, 0], out=SPECTRA[:2].copy()
        ),
        r"out shape \(2, 8, 6\) differs from spectra shape \(3, 8, 6\)",
    ),
    (
        lambda: cross_spectra(
            SPECTRA, INVERSE, SPECTRA[:, 0], SPECTRA[:, :, 0], out=np.zeros((3, 8, 6))
        ),
        r"out must be of dtype complex64, got float64",
    ),
]


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_use_every_core_and_give_the_same_sum(
    n_threads: int | None,
) -> None:
    raw = RNG.integers(0, 1000, (33, 41)).astype(np.uint16)
    coefficients = np.array([0.3, 1.2, -0.7, 0.5, 0.4, -0.2]), np.array([-0.4, 0.3, 0.9, 0, 0, 0])
    many = np.zeros(raw.shape, dtype=np.float32)
    one = np.zeros(raw.shape, dtype=np.float32)
    shift_accumulate(raw, None, *coefficients, many, n_threads=n_threads)
    shift_accumulate(raw, None, *coefficients, one, n_threads=1)
    np.testing.assert_array_equal(many, one)


@pytest.mark.parametrize("shape", [(16, 20), (16, 21), (15, 33)])
def test_critical_exposure_grid_matches_rfft_frequencies_for_odd_and_even_widths(
    shape: tuple[int, int],
) -> None:
    """1/(2 Ne(k)) at the frequencies numpy's rfft2 of an (ny, nx) image has, odd nx too."""
    pixel_size, kv = 1.1, 300.0
    ky = np.fft.fftfreq(shape[0], d=pixel_size)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_size)[None, :]
    k = np.hypot(ky, kx)
    with np.errstate(divide="ignore"):
        expected = np.where(k == 0, 0.0, 0.5 / (0.245 * k**-1.665 + 2.81))
    computed = half_inverse_critical_exposure(shape, pixel_size, kv)
    np.testing.assert_allclose(computed, expected, rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_gain", [False, True])
def test_a_group_of_frames_sums_as_its_frames_one_by_one(dtype: type, use_gain: bool) -> None:
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 100, (45, 70)).astype(dtype) for _ in range(5)]
    gain = rng.uniform(0.8, 1.2, (45, 70)).astype(np.float32) if use_gain else None
    # Small and large shifts: inner tiles (the C rows) and clamped edge tiles.
    coefficients = rng.normal(0, 2.0, (5, 2, 6))
    coefficients[3, :, 0] = [25.0, -30.0]
    together = np.full((45, 70), 3.0, np.float32)
    shift_accumulate_frames(frames, gain, coefficients, together, n_threads=2, tile=16)
    one_by_one = np.full((45, 70), 3.0, np.float32)
    expected = np.full((45, 70), 3.0)
    for frame, (cx, cy) in zip(frames, coefficients, strict=True):
        shift_accumulate(frame, gain, cx, cy, one_by_one, n_threads=1, tile=16)
        expected += em_reference.shift_sample(frame, gain, cx, cy, 16)
    np.testing.assert_array_equal(together, one_by_one)
    np.testing.assert_allclose(together, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_group_of_frames_bins_as_each_frame_alone(dtype: type) -> None:
    rng = np.random.default_rng(12)
    frames = [rng.integers(0, 100, (37, 50)).astype(dtype) for _ in range(3)]
    gain = rng.uniform(0.8, 1.2, (37, 50)).astype(np.float32)
    binned = gain_bin_frames(frames, gain, 3, n_threads=2)
    assert binned.shape == (3, 12, 16)
    for frame, result in zip(frames, binned, strict=True):
        np.testing.assert_array_equal(result, gain_bin(frame, gain, 3, n_threads=1))
        np.testing.assert_allclose(result, em_reference.gain_bin(frame, gain, 3), rtol=1e-5)


REJECTED_ARGUMENTS += [
    (lambda: gain_bin_frames([], None, 2), r"frames must hold at least one frame, got none"),
    (
        lambda: gain_bin_frames([FRAME, FRAME.astype(np.uint8)], None, 2),
        r"frames\[1\] must be of dtype uint16, got uint8",
    ),
    (
        lambda: gain_bin_frames([FRAME, FRAME[:, :8].copy()], None, 2),
        r"frames\[1\] shape \(8, 8\) differs from frames\[0\] shape \(8, 10\)",
    ),
    (
        lambda: gain_bin_frames([FRAME], None, 2, out=np.zeros((1, 4, 4), np.float32)),
        r"out shape \(1, 4, 4\) differs from the binned frames' shape \(1, 4, 5\)",
    ),
    (
        lambda: shift_accumulate_frames(
            [FRAME, FRAME], None, np.zeros((1, 2, 6)), np.zeros((8, 10), np.float32)
        ),
        r"coefficients shape \(1, 2, 6\) differs from \(frames, dx/dy, terms\) shape \(2, 2, 6\)",
    ),
    (
        lambda: shift_accumulate_frames(
            [FRAME], None, np.full((1, 2, 6), np.inf), np.zeros((8, 10), np.float32)
        ),
        r"coefficients must be finite",
    ),
]
