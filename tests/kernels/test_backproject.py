"""The back-projection kernel (`_backproject`, filtered back projection) against its
numpy reference and scikit-image's iradon.

Twin tests run one body against both engines on sinograms whose slice is known (a disc,
a point off the axis); the rest compare the kernel with the reference and iradon.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from skimage.transform import iradon

from prefect_beamline.ext.backproject import (
    FILTER_NAMES,
    backproject,
    filter_sinograms,
    fourier_filter,
    padded_size,
    reconstruct,
)
from tests.kernels.backproject_reference import reference_fbp


def kernel_fbp(
    sinogram: np.ndarray, angles_rad: np.ndarray, centre: float, filter_name: str, size: int
) -> np.ndarray:
    """`reconstruct` of one slice with the reference's signature (no circle mask)."""
    return reconstruct(
        sinogram[None], angles_rad, centre, filter_name=filter_name, output_size=size, circle=False
    )[0]


def circle_mask(size: int, margin: float = 0.0) -> np.ndarray:
    """Pixels of an N x N slice within radius N//2 - margin of the centre (N//2, N//2)."""
    half = size // 2
    y, x = np.mgrid[:size, :size] - half
    return np.asarray(x**2 + y**2 <= (half - margin) ** 2)


# One slice (N, N) by FBP from a sinogram (angle, detector), by each engine.
FBP: dict[str, Callable[..., np.ndarray]] = {"reference": reference_fbp, "kernel": kernel_fbp}
N_DETECTOR = 64
ANGLES = np.linspace(0, np.pi, 180, endpoint=False)
CENTRE = 31.5  # the axis projects between two detector columns


def radius_from_slice_centre(size: int) -> np.ndarray:
    half = size // 2
    y, x = np.mgrid[:size, :size] - half
    return np.hypot(x, y)


@pytest.mark.parametrize("engine", FBP)
def test_a_disc_on_the_axis_comes_back_with_its_attenuation(engine: str) -> None:
    # A disc of radius R and attenuation mu per pixel projects to 2 mu sqrt(R² - t²) at
    # every angle; its slice is mu inside, 0 outside, up to the ramp filter's ripple.
    radius, mu = 20.0, 0.05
    t = np.arange(N_DETECTOR) - CENTRE
    profile = 2 * mu * np.sqrt(np.clip(radius**2 - t**2, 0.0, None))
    sinogram = np.tile(profile, (len(ANGLES), 1)).astype(np.float32)
    image = FBP[engine](sinogram, ANGLES, CENTRE, "ramp", N_DETECTOR)
    r = radius_from_slice_centre(N_DETECTOR)
    inside, outside = r < radius - 3, (r > radius + 3) & (r < N_DETECTOR // 2 - 2)
    assert image[inside].mean() == pytest.approx(mu, rel=0.01)
    assert np.abs(image[inside] - mu).max() < 0.02 * mu
    assert np.abs(image[outside]).max() < 0.01 * mu


@pytest.mark.parametrize("engine", FBP)
def test_a_point_off_the_axis_lands_on_its_pixel(engine: str) -> None:
    # Pixel (i, j) is at x = j - N//2, y = N//2 - i and projects to centre + x cos + y sin.
    x0, y0 = 9.0, -6.0
    trace = CENTRE + x0 * np.cos(ANGLES) + y0 * np.sin(ANGLES)
    columns = np.arange(N_DETECTOR)
    sinogram = np.exp(-0.5 * ((columns[None, :] - trace[:, None]) / 0.7) ** 2)
    image = FBP[engine](sinogram.astype(np.float32), ANGLES, CENTRE, "ramp", N_DETECTOR)
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert (int(peak[0]), int(peak[1])) == (N_DETECTOR // 2 - y0, N_DETECTOR // 2 + x0)


@pytest.mark.parametrize("engine", FBP)
def test_an_empty_sinogram_gives_an_empty_slice(engine: str) -> None:
    sinogram = np.zeros((len(ANGLES), N_DETECTOR), dtype=np.float32)
    assert not FBP[engine](sinogram, ANGLES, CENTRE, "hann", N_DETECTOR).any()


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


FILTERED = np.zeros((1, 10, 17), dtype=np.float32)  # 10 angles, 16 detector columns
ANGLES_10 = np.linspace(0, np.pi, 10, endpoint=False)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: backproject(np.zeros((10, 17), np.float32), ANGLES_10, 8.0),
        r"filtered must be 3-D \(slice, angle, detector \+ 1\)",
    ),
    (
        lambda: backproject(FILTERED.astype(np.float64), ANGLES_10, 8.0),
        r"filtered must be of dtype float32, got float64",
    ),
    (
        lambda: backproject(np.zeros((1, 17, 10), np.float32).transpose(0, 2, 1), ANGLES_10, 8),
        r"filtered must be C-contiguous",
    ),
    (
        lambda: backproject(FILTERED, np.zeros(9), 8.0),
        r"angles_rad shape \(9,\) differs from filtered's \(angle,\) shape \(10,\)",
    ),
    (
        lambda: backproject(FILTERED, np.full(10, np.nan), 8.0),
        r"angles_rad must be finite",
    ),
    (lambda: backproject(FILTERED, ANGLES_10, np.inf), r"centre must be finite"),
    (
        lambda: backproject(FILTERED, ANGLES_10, 8.0, output_size=0),
        r"output_size must be at least 1, got 0",
    ),
    (
        lambda: backproject(FILTERED, ANGLES_10, 8.0, n_threads=-2),
        r"n_threads must be at least 0, got -2",
    ),
    (
        lambda: filter_sinograms(np.zeros((1, 1, 10, 16), np.float32)),
        r"sinograms must be 2-D or 3-D",
    ),
    (
        lambda: filter_sinograms(np.zeros((10, 16), np.complex64)),
        r"sinograms must be of dtype signed integer, unsigned integer or floating point, "
        r"got complex64",
    ),
    (
        lambda: filter_sinograms(np.zeros((10, 0), np.float32)),
        r"sinograms must hold at least 1 detector column",
    ),
    (lambda: filter_sinograms(np.zeros((10, 16)), "ram-lak"), r"filter must be one of"),
    (lambda: padded_size(0), r"n_detector must be at least 1, got 0"),
    (lambda: fourier_filter(0), r"size must be at least 1, got 0"),
]


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_use_every_core_and_give_the_same_slices(
    n_threads: int | None,
) -> None:
    rng = np.random.default_rng(8)
    sinograms = rng.random((2, 40, 30)).astype(np.float32)
    angles = np.linspace(0, np.pi, 40, endpoint=False)
    np.testing.assert_array_equal(
        reconstruct(sinograms, angles, 15.2, n_threads=n_threads),
        reconstruct(sinograms, angles, 15.2, n_threads=1),
    )
