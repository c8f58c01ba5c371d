"""The Fourier reconstruction (`_gridrec`, gridding + de-apodisation) against its numpy
reference (the exact non-uniform sum), the exact back projector, and the phantom.

Twin tests run one body against the reference and the kernel on sinograms whose slice
is known (a disc, a point off the axis); the rest compare the kernel with the reference,
with `backproject.reconstruct` and with scikit-image's iradon against the phantom.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from skimage.transform import iradon

from prefect_beamline.ext.backproject import reconstruct
from prefect_beamline.ext.gridrec import (
    deapodisation,
    grid_size,
    kaiser_bessel,
    kaiser_bessel_beta,
    reconstruct_fourier,
)
from prefect_beamline.techniques.tomo.synth import phantom_sinogram, phantom_slice
from tests.kernels.gridrec_reference import reference_fourier_fbp
from tests.techniques.tomo.metrics import circle_mask, nrmse

N_DETECTOR = 48
ANGLES = np.linspace(0, np.pi, 120, endpoint=False)
CENTRE = 23.5  # the axis projects between two detector columns


def kernel_fourier(
    sinogram: np.ndarray, angles_rad: np.ndarray, centre: float, filter_name: str, size: int
) -> np.ndarray:
    return reconstruct_fourier(
        sinogram[None], angles_rad, centre, filter_name=filter_name, output_size=size,
        circle=False,
    )[0]  # fmt: skip


def reference(
    sinogram: np.ndarray, angles_rad: np.ndarray, centre: float, filter_name: str, size: int
) -> np.ndarray:
    grid = grid_size(size, sinogram.shape[1])
    return reference_fourier_fbp(sinogram, angles_rad, centre, filter_name, size, grid)


FOURIER: dict[str, Callable[..., np.ndarray]] = {"reference": reference, "kernel": kernel_fourier}


def radius_from_slice_centre(size: int) -> np.ndarray:
    half = size // 2
    y, x = np.mgrid[:size, :size] - half
    return np.hypot(x, y)


@pytest.mark.parametrize("engine", FOURIER)
def test_a_disc_on_the_axis_comes_back_with_its_attenuation(engine: str) -> None:
    radius, mu = 15.0, 0.05
    t = np.arange(N_DETECTOR) - CENTRE
    profile = 2 * mu * np.sqrt(np.clip(radius**2 - t**2, 0.0, None))
    sinogram = np.tile(profile, (len(ANGLES), 1)).astype(np.float32)
    image = FOURIER[engine](sinogram, ANGLES, CENTRE, "ramp", N_DETECTOR)
    r = radius_from_slice_centre(N_DETECTOR)
    inside, outside = r < radius - 3, (r > radius + 3) & (r < N_DETECTOR // 2 - 2)
    assert image[inside].mean() == pytest.approx(mu, rel=0.01)
    # 6 %, not FBP's 2 %: interpolated exactly, the ramp's ripple from the disc's edge
    # is not smoothed away as linear interpolation smooths it.
    assert np.abs(image[inside] - mu).max() < 0.06 * mu
    assert np.abs(image[outside]).max() < 0.02 * mu


@pytest.mark.parametrize("engine", FOURIER)
def test_a_point_off_the_axis_lands_on_its_pixel(engine: str) -> None:
    x0, y0 = 9.0, -6.0
    trace = CENTRE + x0 * np.cos(ANGLES) + y0 * np.sin(ANGLES)
    columns = np.arange(N_DETECTOR)
    sinogram = np.exp(-0.5 * ((columns[None, :] - trace[:, None]) / 0.7) ** 2)
    image = FOURIER[engine](sinogram.astype(np.float32), ANGLES, CENTRE, "ramp", N_DETECTOR)
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert (int(peak[0]), int(peak[1])) == (N_DETECTOR // 2 - y0, N_DETECTOR // 2 + x0)


def test_an_empty_sinogram_gives_an_empty_slice() -> None:
    sinogram = np.zeros((len(ANGLES), N_DETECTOR), dtype=np.float32)
    assert not kernel_fourier(sinogram, ANGLES, CENTRE, "hann", N_DETECTOR).any()


@pytest.mark.parametrize("filter_name", ["ramp", "hann"])
def test_gridrec_equals_the_exact_non_uniform_sum_off_centre(filter_name: str) -> None:
    """Gridding error at the default kernel: < 2e-4 of the slice's range, everywhere
    (the filters differ only in the radial weights, which the reference shares)."""
    rng = np.random.default_rng(3)
    sinogram = rng.random((60, 40)).astype(np.float32)
    angles = np.deg2rad(np.linspace(0, 180, 60, endpoint=False))
    centre = 21.37
    result = kernel_fourier(sinogram, angles, centre, filter_name, 40)
    expected = reference(sinogram, angles, centre, filter_name, 40)
    assert np.abs(result - expected).max() < 2e-4 * np.abs(expected).max()


@pytest.mark.parametrize(("width", "tolerance"), [(4, 3e-3), (6, 2e-4), (8, 2e-5)])
def test_a_wider_kernel_is_more_accurate(width: int, tolerance: float) -> None:
    rng = np.random.default_rng(9)
    sinogram = rng.random((40, 32)).astype(np.float32)
    angles = np.linspace(0, np.pi, 40, endpoint=False)
    result = reconstruct_fourier(sinogram, angles, 15.6, circle=False, kernel_width=width)[0]
    expected = reference(sinogram, angles, 15.6, "ramp", 32)
    assert np.abs(result - expected).max() < tolerance * np.abs(expected).max()


def test_gridrec_agrees_with_the_exact_back_projector_on_the_phantom() -> None:
    """Same sum, interpolated exactly instead of linearly: the slices differ by far
    less than either differs from the phantom."""
    n = 128
    angles_deg = np.linspace(0, 180, 200, endpoint=False)
    sinogram = phantom_sinogram(n, angles_deg)
    angles = np.deg2rad(angles_deg)
    fourier = reconstruct_fourier(sinogram, angles, n // 2)[0]
    exact = reconstruct(sinogram[None], angles, n // 2)[0]
    inside = circle_mask(n, margin=1)
    assert nrmse(fourier, exact, inside) < 0.02


def test_gridrec_is_as_close_to_the_phantom_as_iradon() -> None:
    """The issue's quality target: NRMSE against the phantom within 0.005 of iradon's."""
    n = 256
    angles_deg = np.linspace(0, 180, 360, endpoint=False)
    sinogram = phantom_sinogram(n, angles_deg)
    truth = phantom_slice(n, angles_deg)
    inside = circle_mask(n, margin=2)
    fourier = reconstruct_fourier(sinogram, np.deg2rad(angles_deg), n // 2, n_threads=2)[0]
    expected = iradon(sinogram.T.astype(np.float64), angles_deg, filter_name="ramp")
    assert nrmse(fourier, truth, inside) <= nrmse(expected, truth, inside) + 0.005


def test_angles_of_the_second_half_turn_mirror_into_the_first() -> None:
    """The projection at theta + pi is the one at theta reversed about the axis: both
    give the same slice (samples with sin theta < 0 are gridded conjugated, mirrored)."""
    rng = np.random.default_rng(11)
    n = 40
    sinogram = rng.random((30, n)).astype(np.float32)
    sinogram[:, 0] = 0.0  # its mirror image about column n // 2 is off the detector
    reversed_about_axis = np.zeros_like(sinogram)
    reversed_about_axis[:, 1:] = sinogram[:, :0:-1]
    angles = np.linspace(0, np.pi, 30, endpoint=False)
    first = reconstruct_fourier(sinogram, angles, n // 2, circle=False)[0]
    second = reconstruct_fourier(reversed_about_axis, angles + np.pi, n // 2, circle=False)[0]
    assert np.abs(second - first).max() < 1e-5 * np.abs(first).max()


def test_gridrec_is_the_same_on_one_thread_and_many() -> None:
    rng = np.random.default_rng(6)
    sinograms = rng.random((3, 50, 70)).astype(np.float32)
    angles = np.deg2rad(np.linspace(0, 180, 50, endpoint=False))
    one = reconstruct_fourier(sinograms, angles, 33.2, n_threads=1)
    many = reconstruct_fourier(sinograms, angles, 33.2, n_threads=3)
    np.testing.assert_allclose(one, many, rtol=0, atol=1e-6 * np.abs(one).max())
    assert one.shape == (3, 70, 70)


def test_circle_zeroes_outside_and_matches_inside() -> None:
    rng = np.random.default_rng(5)
    sinogram = rng.random((60, 40)).astype(np.float32)
    angles = np.deg2rad(np.linspace(0, 180, 60, endpoint=False))
    with_circle = reconstruct_fourier(sinogram, angles, 20.0, circle=True)[0]
    without = reconstruct_fourier(sinogram, angles, 20.0, circle=False)[0]
    inside = circle_mask(40)
    assert np.all(with_circle[~inside] == 0)
    np.testing.assert_array_equal(with_circle[inside], without[inside])


def test_deapodisation_is_the_kernels_fourier_transform() -> None:
    width, size = 6, 128
    beta = kaiser_bessel_beta(width, 2.0)
    offsets = np.linspace(-width / 2, width / 2, 200001)
    for x in (0.0, 17.0, 32.0):
        riemann = np.trapezoid(
            kaiser_bessel(offsets, width, beta) * np.cos(2 * np.pi * offsets * x / size), offsets
        )
        assert deapodisation(np.array([x]), size, width, beta)[0] == pytest.approx(
            riemann, rel=1e-6
        )


SINOGRAM = np.zeros((10, 16), dtype=np.float32)
ANGLES_10 = np.linspace(0, np.pi, 10, endpoint=False)

REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: reconstruct_fourier(np.zeros((1, 1, 10, 16), np.float32), ANGLES_10, 8.0),
        r"sinograms must be 2-D or 3-D",
    ),
    (
        lambda: reconstruct_fourier(SINOGRAM, np.zeros(9), 8.0),
        r"angles_rad shape \(9,\) differs from sinograms' \(angle,\) shape \(10,\)",
    ),
    (
        lambda: reconstruct_fourier(SINOGRAM, np.full(10, np.nan), 8.0),
        r"angles_rad must be finite",
    ),
    (lambda: reconstruct_fourier(SINOGRAM, ANGLES_10, np.inf), r"centre must be finite"),
    (
        lambda: reconstruct_fourier(SINOGRAM, ANGLES_10, 8.0, output_size=0),
        r"output_size must be at least 1, got 0",
    ),
    (
        lambda: reconstruct_fourier(SINOGRAM, ANGLES_10, 8.0, oversampling=1.0),
        r"oversampling must be at least 1.25, got 1.0",
    ),
    (
        lambda: reconstruct_fourier(SINOGRAM, ANGLES_10, 8.0, kernel_width=17),
        r"kernel_width must be at most 16, got 17",
    ),
    (
        lambda: reconstruct_fourier(SINOGRAM, ANGLES_10, 8.0, filter_name="ram-lak"),  # type: ignore[arg-type]
        r"filter must be one of",
    ),
]
