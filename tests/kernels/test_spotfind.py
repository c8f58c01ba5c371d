"""The Cython spot finder (`ext/spotfind.py`) and its plain numpy/scipy reference.

Twin tests run one body against both engines on crafted frames whose answer is known;
the rest compare the kernel with the reference on random and awkward frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prefect_beamline.ext.spotfind import DispersionParameters, dispersion_threshold, find_spots
from tests.kernels.spotfind_reference import overloads, reference_spots, reference_threshold

DTYPES = [np.uint16, np.uint32, np.int32, np.float32]
DEFAULT = DispersionParameters()

# The strong-pixel mask of a frame, by each engine.
THRESHOLD: dict[str, Callable[..., np.ndarray]] = {
    "reference": reference_threshold,
    "kernel": dispersion_threshold,
}


def kernel_spots(
    image: np.ndarray, mask: np.ndarray, params: DispersionParameters = DEFAULT, **sizes: int
) -> dict[str, np.ndarray]:
    """`find_spots` in the reference's form: a dict of arrays sorted by (y, x)."""
    spots = find_spots(image, mask, params, **sizes)
    order = np.lexsort((spots.x, spots.y))
    return {
        "x": spots.x[order],
        "y": spots.y[order],
        "intensity": spots.intensity[order],
        "n_pixels": spots.n_pixels[order],
    }


# The spots of a frame (dict of x, y, intensity, n_pixels sorted by y, x), by each engine.
SPOTS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "reference": reference_spots,
    "kernel": kernel_spots,
}


def frame_with_spots(
    shape: tuple[int, int] = (256, 300), background: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson background, planted 3x3 spots, module-gap bands and dead pixels."""
    rng = np.random.default_rng(seed)
    image = rng.poisson(background, shape).astype(np.int64)
    for _ in range(40):
        y, x = rng.integers(2, shape[0] - 2), rng.integers(2, shape[1] - 2)
        image[y - 1 : y + 2, x - 1 : x + 2] += rng.integers(3, 80)
    mask = np.ones(shape, dtype=bool)
    mask[shape[0] // 3 : shape[0] // 3 + 5] = False
    mask[:, shape[1] // 2 : shape[1] // 2 + 3] = False
    mask[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = False
    return image, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_threshold_equals_reference(dtype: type, kernel_size: int) -> None:
    image, mask = frame_with_spots()
    params = DispersionParameters(kernel_size=kernel_size)
    expected = reference_threshold(image.astype(dtype), mask, params)
    found = dispersion_threshold(image.astype(dtype), mask, params)
    assert expected.sum() > 50
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize(
    "params",
    [
        DispersionParameters(gain=2.0),
        DispersionParameters(sigma_background=3.0, sigma_strong=2.0),
        DispersionParameters(min_local=30),
        DispersionParameters(global_threshold=20.0),
    ],
)
def test_threshold_equals_reference_for_other_settings(params: DispersionParameters) -> None:
    image, mask = frame_with_spots(seed=3)
    np.testing.assert_array_equal(
        dispersion_threshold(image.astype(np.uint32), mask, params),
        reference_threshold(image.astype(np.uint32), mask, params),
    )


def test_threads_give_identical_masks() -> None:
    image, mask = frame_with_spots((1000, 1000), seed=1)
    image = image.astype(np.uint32)
    one = dispersion_threshold(image, mask, n_threads=1)
    np.testing.assert_array_equal(dispersion_threshold(image, mask, n_threads=2), one)
    np.testing.assert_array_equal(dispersion_threshold(image, mask, n_threads=7), one)
    np.testing.assert_array_equal(reference_threshold(image, mask), one)


def test_masked_pixels_never_strong_and_do_not_count() -> None:
    image, mask = frame_with_spots(seed=4)
    image[~mask] = 10_000  # what a gap pixel may hold; must be ignored
    found = dispersion_threshold(image.astype(np.uint32), mask)
    assert not found[~mask].any()
    np.testing.assert_array_equal(found, reference_threshold(image.astype(np.uint32), mask))


def test_edges_saturation_and_empty_regions() -> None:
    image, mask = frame_with_spots((64, 80), seed=5)
    image[0, 0] = image[-1, -1] = image[0, -1] = 500  # corners
    image[50, 60] = 1_000_000  # saturated pixel
    mask[49:52, 59:62] = True
    mask[:, :10] = False  # a fully masked strip
    image = image.astype(np.uint32)
    found = dispersion_threshold(image, mask)
    np.testing.assert_array_equal(found, reference_threshold(image, mask))
    assert found[-1, -1] and found[50, 60]


def test_float_frames_with_nan_masked_out() -> None:
    image, mask = frame_with_spots(seed=6)
    values = image.astype(np.float32)
    values[5, 5] = np.nan
    mask[5, 5] = False
    np.testing.assert_array_equal(
        dispersion_threshold(values, mask), reference_threshold(values, mask)
    )


def checkerboard(shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """0 and 2 counts alternating: mean 1, variance 1, the dispersion of Poisson noise,
    and no window of it passes the dispersion test (crafted, so the answer is known)."""
    rows, columns = np.indices(shape)
    return np.where((rows + columns) % 2 == 0, 2, 0)


SPOT = (slice(20, 22), slice(30, 32))  # a 2 x 2 spot of 100 counts a pixel
SPOT_PIXELS = [[20, 30], [20, 31], [21, 30], [21, 31]]


def frame_with_one_spot(dtype: type = np.uint32) -> tuple[np.ndarray, np.ndarray]:
    image = checkerboard()
    image[SPOT] = 100
    return image.astype(dtype), np.ones(image.shape, dtype=bool)


@pytest.mark.parametrize("engine", THRESHOLD)
def test_flat_frame_has_no_strong_pixels(engine: str) -> None:
    image = np.full((50, 60), 7, dtype=np.uint16)
    assert not THRESHOLD[engine](image, np.ones(image.shape, bool)).any()


@pytest.mark.parametrize("engine", THRESHOLD)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_a_planted_spot_is_exactly_its_pixels(engine: str, dtype: type, kernel_size: int) -> None:
    image, mask = frame_with_one_spot(dtype)
    strong = THRESHOLD[engine](image, mask, DispersionParameters(kernel_size=kernel_size))
    assert np.argwhere(strong).tolist() == SPOT_PIXELS


@pytest.mark.parametrize("engine", THRESHOLD)
def test_a_spot_in_the_corner_is_found_with_its_truncated_window(engine: str) -> None:
    image = checkerboard().astype(np.uint32)
    image[:2, :2] = 100
    strong = THRESHOLD[engine](image, np.ones(image.shape, bool))
    assert np.argwhere(strong).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize("engine", THRESHOLD)
def test_a_masked_spot_is_not_strong(engine: str) -> None:
    image, mask = frame_with_one_spot(np.uint16)
    mask[SPOT] = False
    assert not THRESHOLD[engine](image, mask).any()


@pytest.mark.parametrize("engine", THRESHOLD)
def test_a_masked_nan_next_to_a_spot_changes_nothing(engine: str) -> None:
    image, mask = frame_with_one_spot(np.float32)
    image[22, 31] = np.nan
    mask[22, 31] = False
    assert np.argwhere(THRESHOLD[engine](image, mask)).tolist() == SPOT_PIXELS


@pytest.mark.parametrize("engine", THRESHOLD)
def test_a_saturated_pixel_outshines_the_rest_of_its_spot(engine: str) -> None:
    # Beside 2^32 - 1 counts, a pixel of 100 is below its window's mean: not strong.
    image, mask = frame_with_one_spot(np.uint32)
    image[21, 31] = np.iinfo(np.uint32).max
    assert np.argwhere(THRESHOLD[engine](image, mask)).tolist() == [[21, 31]]


@pytest.mark.parametrize("engine", SPOTS)
def test_a_planted_spot_has_its_centroid_and_summed_counts(engine: str) -> None:
    image, mask = frame_with_one_spot()
    spots = SPOTS[engine](image, mask)
    # Pixel centres at +0.5: columns 30.5 and 31.5, rows 20.5 and 21.5.
    np.testing.assert_array_equal(spots["x"], [31.0])
    np.testing.assert_array_equal(spots["y"], [21.0])
    np.testing.assert_array_equal(spots["intensity"], [400.0])
    np.testing.assert_array_equal(spots["n_pixels"], [4])


@pytest.mark.parametrize("engine", SPOTS)
def test_spot_size_limits_drop_smaller_and_larger_spots(engine: str) -> None:
    image, mask = frame_with_one_spot()
    assert len(SPOTS[engine](image, mask, min_spot_size=5)["x"]) == 0
    assert len(SPOTS[engine](image, mask, max_spot_size=3)["x"]) == 0
    assert len(SPOTS[engine](image, mask, min_spot_size=4, max_spot_size=4)["x"]) == 1


def test_spots_match_reference_components() -> None:
    image, mask = frame_with_spots(seed=7)
    image = image.astype(np.uint32)
    spots = find_spots(image, mask)
    expected = reference_spots(image, mask)
    order = np.lexsort((spots.x, spots.y))
    assert len(spots) == len(expected["x"]) > 20
    np.testing.assert_allclose(spots.x[order], expected["x"], atol=1e-9)
    np.testing.assert_allclose(spots.y[order], expected["y"], atol=1e-9)
    np.testing.assert_allclose(spots.intensity[order], expected["intensity"])
    np.testing.assert_array_equal(spots.n_pixels[order], expected["n_pixels"])


@pytest.mark.parametrize("engine", SPOTS)
def test_single_hot_pixels_are_not_spots(engine: str) -> None:
    image = np.random.default_rng(8).poisson(1.0, (100, 100)).astype(np.uint32)
    image[50, 50] = 50_000
    spots = SPOTS[engine](image, np.ones(image.shape, bool))
    assert len(spots["x"]) == 0
    assert len(SPOTS[engine](image, np.ones(image.shape, bool), min_spot_size=1)["x"]) == 1


@pytest.mark.parametrize("engine", SPOTS)
def test_diagonal_neighbours_join_one_spot(engine: str) -> None:
    image = np.zeros((40, 40), dtype=np.uint32) + 1
    image[10, 10] = image[11, 11] = image[12, 12] = 200
    spots = SPOTS[engine](image, np.ones(image.shape, bool), DispersionParameters(kernel_size=4))
    assert len(spots["x"]) == 1 and spots["n_pixels"][0] == 3
    assert spots["x"][0] == pytest.approx(11.5) and spots["y"][0] == pytest.approx(11.5)


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (np.zeros((3, 4, 5), np.uint32), np.ones((3, 4, 5), bool), "2-D"),
        (np.zeros((4, 5), np.float64), np.ones((4, 5), bool), "dtype"),
        (np.zeros((4, 5), np.uint32), np.ones((4, 6), bool), "mask shape"),
        (np.zeros((4, 5), np.uint32), np.ones((4, 5), np.uint8), "bool"),
    ],
)
def test_bad_input_is_named(image: np.ndarray, mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dispersion_threshold(image, mask)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: find_spots(np.zeros((4, 5, 1), np.uint16), np.ones((4, 5, 1), bool)),
        r"image must be 2-D \(ny, nx\), got shape \(4, 5, 1\)",
    ),
    (
        lambda: find_spots(np.zeros((4, 5), np.int64), np.ones((4, 5), bool)),
        r"image must be of dtype uint16, uint32, int32 or float32, got int64",
    ),
    (
        lambda: dispersion_threshold(np.zeros((4, 5), ">u2"), np.ones((4, 5), bool)),
        r"image must be of dtype .*, got >u2 \(uint16 in non-native byte order\)",
    ),
    (
        lambda: find_spots(np.zeros((4, 5), np.uint16), np.ones((5, 4), bool)),
        r"mask shape \(5, 4\) differs from image shape \(4, 5\)",
    ),
    (
        lambda: dispersion_threshold(
            np.zeros((4, 5), np.uint16), np.ones((4, 5), bool), out=np.zeros((4, 4), bool)
        ),
        r"out shape \(4, 4\) differs from image shape \(4, 5\)",
    ),
    (
        lambda: dispersion_threshold(
            np.zeros((4, 5), np.uint16), np.ones((4, 5), bool), out=np.zeros((4, 5), np.uint8)
        ),
        r"out must be of dtype bool, got uint8",
    ),
    (
        lambda: dispersion_threshold(
            np.zeros((4, 5), np.uint16),
            np.ones((4, 5), bool),
            out=np.zeros((5, 4), bool).T,
        ),
        r"out must be C-contiguous",
    ),
    (
        lambda: find_spots(np.zeros((4, 5), np.uint16), np.ones((4, 5), bool), min_spot_size=0),
        r"min_spot_size must be at least 1, got 0",
    ),
    (
        lambda: find_spots(
            np.zeros((4, 5), np.uint16),
            np.ones((4, 5), bool),
            min_spot_size=5,
            max_spot_size=4,
        ),
        r"max_spot_size must be at least 5, got 4",
    ),
    (
        lambda: dispersion_threshold(
            np.zeros((4, 5), np.uint16), np.ones((4, 5), bool), n_threads=-1
        ),
        r"n_threads must be at least 0, got -1",
    ),
    (lambda: DispersionParameters(gain=float("nan")), r"gain must be finite, got nan"),
    (lambda: DispersionParameters(gain=0.0), r"gain must be greater than 0"),
    (lambda: DispersionParameters(kernel_size=0), r"kernel_size must be at least 1"),
    (lambda: DispersionParameters(min_local=1), r"min_local must be at least 2"),
    (
        lambda: DispersionParameters(sigma_strong=float("nan")),
        r"sigma_strong must be finite, got nan",
    ),
]


def test_arguments_of_the_wrong_kind_are_named() -> None:
    image, mask = frame_with_one_spot()
    with pytest.raises(TypeError, match="image must be a numpy array, got list"):
        find_spots(image.tolist(), mask)
    with pytest.raises(TypeError, match="params must be DispersionParameters, got dict"):
        dispersion_threshold(image, mask, {"gain": 1.0})
    with pytest.raises(TypeError, match="kernel_size must be an integer, got 2.5"):
        DispersionParameters(kernel_size=2.5)


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_use_every_core_and_give_the_same_mask(
    n_threads: int | None,
) -> None:
    image, mask = frame_with_spots((300, 200), seed=18)
    image = image.astype(np.uint32)
    np.testing.assert_array_equal(
        dispersion_threshold(image, mask, n_threads=n_threads),
        dispersion_threshold(image, mask, n_threads=1),
    )


# Crafted inputs for the packed 32-bit rows (ext/include/_spotfind_rows.h): the rows whose
# window holds a value above the packing limit take the 64-bit rows, and the exact test of
# the screen's survivors runs on 8 lanes inside the row and element by element at its ends.


@pytest.mark.parametrize("n_threads", [1, 3])
def test_bright_pixels_take_the_64_bit_rows_and_still_match(n_threads: int) -> None:
    image, mask = frame_with_spots((300, 200), seed=9)
    image = image.astype(np.uint32)
    # Above the k = 3 packing limit (684,784 counts), and small enough that every window
    # sum of squares stays an exact float64 integer in the reference.
    for row, col, value in [
        (0, 5, 700_000),
        (2, 199, 3_000_000),
        (99, 90, 20_000_000),
        (100, 40, 800_000),
        (150, 0, 5_000_000),
        (299, 150, 1_000_000),
    ]:
        image[row, col] = value
        image[row, col + 1 if col < 199 else col - 1] = value // 2
    found = dispersion_threshold(image, mask, n_threads=n_threads)
    np.testing.assert_array_equal(found, reference_threshold(image, mask))
    assert found[99, 90] and found[150, 0]


def test_bright_background_region_matches_the_reference() -> None:
    # Every window in this region sums past the packing limit: only the 64-bit rows get
    # its spots right (packed sums would carry into the count bits there).
    image, mask = frame_with_spots((160, 150), seed=16)
    rng = np.random.default_rng(16)
    region = (slice(40, 90), slice(20, 120))
    image[region] = 1_000_000 + rng.normal(0, 1_000, (50, 100)).astype(np.int64)
    image[60:62, 50:52] += 40_000
    image[75, 100] += 60_000_000  # m * p would overflow int32
    image = image.astype(np.uint32)
    expected = reference_threshold(image, mask)
    assert expected[region].sum() >= 5 and expected[75, 100]
    np.testing.assert_array_equal(dispersion_threshold(image, mask, n_threads=2), expected)


def test_masked_bright_values_keep_the_fast_rows_exact() -> None:
    image, mask = frame_with_spots(seed=10)
    image = image.astype(np.uint32)
    mask[40:43, :] = False
    image[40:43, :] = np.iinfo(np.uint32).max  # saturated module edge, masked
    found = dispersion_threshold(image, mask)
    assert not found[40:43].any()
    np.testing.assert_array_equal(found, reference_threshold(image, mask))


def test_negative_int32_values_match_the_reference() -> None:
    image, mask = frame_with_spots(seed=11)
    image = image.astype(np.int32)
    image[60:64, 30:90] = -5  # e.g. a pedestal-subtracted region
    image[120, 10] = -1_000
    np.testing.assert_array_equal(
        dispersion_threshold(image, mask, n_threads=2), reference_threshold(image, mask)
    )


def test_uint16_full_range_with_a_large_kernel() -> None:
    # k = 20: the packing limit (623 counts) is below uint16's range, so bright rows
    # take the 64-bit rows; the rest stays on the packed rows.
    rng = np.random.default_rng(12)
    image = rng.poisson(3.0, (200, 180)).astype(np.uint16)
    image[50:53, 60:63] = 65_535
    image[150, 170] = 2_000
    mask = np.ones(image.shape, dtype=bool)
    params = DispersionParameters(kernel_size=20)
    found = dispersion_threshold(image, mask, params)
    assert found[51, 61]
    np.testing.assert_array_equal(found, reference_threshold(image, mask, params))


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
def test_strong_pixels_at_every_column_near_the_edges(kernel_size: int) -> None:
    rng = np.random.default_rng(13)
    shape = (60, 41)
    image = rng.poisson(2.0, shape).astype(np.uint32)
    rows = np.arange(3, 57, 3)
    for i, row in enumerate(rows):
        for col in (i % 10, shape[1] - 1 - i % 10):  # 0..9 and nx-10..nx-1
            image[row, col] += 60
    mask = rng.random(shape) > 0.05
    params = DispersionParameters(kernel_size=kernel_size)
    found = dispersion_threshold(image, mask, params)
    assert found.sum() > 10
    np.testing.assert_array_equal(found, reference_threshold(image, mask, params))


def test_sparse_mask_inside_every_window() -> None:
    image, _ = frame_with_spots((200, 220), background=4.0, seed=14)
    mask = np.random.default_rng(14).random(image.shape) > 0.3  # 30 % masked
    for dtype in (np.uint16, np.uint32):
        np.testing.assert_array_equal(
            dispersion_threshold(image.astype(dtype), mask),
            reference_threshold(image.astype(dtype), mask),
        )


@pytest.mark.parametrize("sigma_strong", [0.0, -1.0, 1e-30])
def test_degenerate_sigma_strong_matches_the_reference(sigma_strong: float) -> None:
    image, mask = frame_with_spots(seed=15)
    params = DispersionParameters(sigma_strong=sigma_strong)
    image = image.astype(np.uint32)
    np.testing.assert_array_equal(
        dispersion_threshold(image, mask, params), reference_threshold(image, mask, params)
    )


def test_empty_frame_is_handled() -> None:
    for shape in [(0, 10), (10, 0)]:
        image = np.zeros(shape, dtype=np.uint32)
        assert dispersion_threshold(image, np.ones(shape, bool)).shape == shape


def test_kernel_too_large_to_pack_takes_the_64_bit_rows() -> None:
    # k = 1500 leaves too few bits to pack counts and sums; on a 30 x 30 frame any
    # k >= 29 covers the whole frame, so k = 1500 must give the answer of k = 30.
    image, mask = frame_with_spots((30, 30), seed=17)
    image = image.astype(np.uint32)
    small = DispersionParameters(kernel_size=30)
    expected = reference_threshold(image, mask, small)
    assert expected.any()
    np.testing.assert_array_equal(dispersion_threshold(image, mask, small), expected)
    found = dispersion_threshold(image, mask, DispersionParameters(kernel_size=1500))
    np.testing.assert_array_equal(found, expected)


# Per-frame overload masking: pixels above max_valid (the overflow value 2^n - 1, counts
# beyond saturation) are masked in the kernel's own loops and counted.


def kernel_overloads(image: np.ndarray, mask: np.ndarray, max_valid: float | None) -> int:
    return find_spots(image, mask, max_valid=max_valid).n_overloads


# The number of overloads of a frame, by each engine.
OVERLOADS: dict[str, Callable[..., int]] = {
    "reference": lambda image, mask, max_valid: int(overloads(image, mask, max_valid).sum()),
    "kernel": kernel_overloads,
}


@pytest.mark.parametrize("engine", THRESHOLD)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_an_overflowed_pixel_in_a_spot_is_masked_not_strong(engine: str, dtype: type) -> None:
    # Beside the overflow value 2^n - 1, the other spot pixels stay strong once it is masked.
    image, mask = frame_with_one_spot(dtype)
    overflow = np.iinfo(dtype).max
    image[21, 31] = overflow
    strong = THRESHOLD[engine](image, mask, DEFAULT, max_valid=overflow - 1)
    assert np.argwhere(strong).tolist() == [[20, 30], [20, 31], [21, 30]]


@pytest.mark.parametrize("engine", SPOTS)
def test_overflowed_pixels_never_reach_an_intensity(engine: str) -> None:
    image, mask = frame_with_one_spot(np.uint32)
    image[21, 31] = image[5, 5] = np.iinfo(np.uint32).max
    spots = SPOTS[engine](image, mask, max_valid=1_000_000)
    np.testing.assert_array_equal(spots["intensity"], [300.0])
    np.testing.assert_array_equal(spots["n_pixels"], [3])


@pytest.mark.parametrize("engine", OVERLOADS)
def test_overloads_are_counted_once_per_valid_pixel(engine: str) -> None:
    image, mask = frame_with_spots((300, 200), seed=21)
    image = image.astype(np.uint32)
    image[[0, 5, 150, 299, 299], [0, 7, 120, 199, 3]] = np.iinfo(np.uint32).max
    mask[[0, 5, 150, 299, 299, 10, 11], [0, 7, 120, 199, 3, 10, 11]] = True
    image[10, 10] = 2_000  # above saturation
    image[11, 11] = 1_000  # at saturation: used
    mask[5, 7] = False  # a masked overflow is the mask's, not an overload
    assert OVERLOADS[engine](image, mask, 1_000) == 5
    assert OVERLOADS[engine](image, mask, None) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 3])
def test_threshold_with_overloads_equals_reference(dtype: type, n_threads: int) -> None:
    image, mask = frame_with_spots((300, 260), seed=22)
    rng = np.random.default_rng(22)
    rows, cols = rng.integers(0, 300, 60), rng.integers(0, 260, 60)
    image[rows, cols] = 70  # some above max_valid, some inside spots
    image[rows[:20], cols[:20]] = 40
    if dtype is np.int32:
        image[rows[:5], cols[:5]] = -1  # a detector's flag: masked like an overload
    frame = image.astype(dtype)
    expected = reference_threshold(frame, mask, DEFAULT, max_valid=50)
    found = find_spots(frame, mask, max_valid=50, n_threads=n_threads, min_spot_size=1)
    np.testing.assert_array_equal(
        dispersion_threshold(frame, mask, max_valid=50, n_threads=n_threads), expected
    )
    assert found.n_overloads == int(overloads(frame, mask, 50).sum()) > 30


def test_bright_rows_with_overloads_match_the_reference() -> None:
    # Values above the packing limit but below max_valid take the 64-bit rows; overflow
    # values above max_valid must not send rows there, nor count twice.
    image, mask = frame_with_spots((300, 200), seed=23)
    image = image.astype(np.uint32)
    image[99, 90] = 20_000_000
    image[[3, 150, 298], [4, 120, 199]] = np.iinfo(np.uint32).max
    mask[[3, 150, 298], [4, 120, 199]] = True
    expected = reference_threshold(image, mask, DEFAULT, max_valid=30_000_000)
    found = find_spots(image, mask, max_valid=30_000_000, n_threads=2)
    np.testing.assert_array_equal(
        dispersion_threshold(image, mask, max_valid=30_000_000, n_threads=2), expected
    )
    assert found.n_overloads == 3


def test_negative_max_valid_is_refused() -> None:
    image, mask = frame_with_one_spot()
    with pytest.raises(ValueError, match="max_valid must be at least 0"):
        find_spots(image, mask, max_valid=-1)
