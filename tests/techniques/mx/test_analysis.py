"""Resolution estimate and grid-scan X-ray centring from spots (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from prefect_beamline.events import GridScan
from prefect_beamline.techniques.mx.analysis import (
    MIN_SPOTS_FOR_RESOLUTION,
    estimate_d_min,
    find_grid_centre,
    grid_image_index,
)


def uniform_reciprocal_shell_d(n: int, d_min: float, rng: np.random.Generator) -> np.ndarray:
    """d-spacings of spots uniform in 1/d² up to 1/d_min² (what a crystal gives)."""
    return 1.0 / np.sqrt(rng.uniform(0.0005, 1.0 / d_min**2, n))


def test_d_min_tracks_the_outermost_spots() -> None:
    rng = np.random.default_rng(0)
    d = uniform_reciprocal_shell_d(400, 2.0, rng)
    estimate = estimate_d_min(d)
    assert estimate is not None
    assert 2.0 <= estimate < 2.1


def test_d_min_ignores_a_few_spurious_far_spots() -> None:
    rng = np.random.default_rng(1)
    d = np.concatenate([uniform_reciprocal_shell_d(300, 3.0, rng), [0.9, 1.0]])
    estimate = estimate_d_min(d)
    assert estimate is not None and estimate > 2.9


def test_d_min_needs_enough_spots() -> None:
    assert estimate_d_min(np.full(MIN_SPOTS_FOR_RESOLUTION - 1, 2.0)) is None
    assert estimate_d_min(np.array([np.inf] * 20)) is None


def test_snaked_grid_reverses_odd_rows() -> None:
    index = grid_image_index(GridScan(steps_x=3, steps_y=2, dx_um=1, dy_um=1, snaked=True))
    assert index.tolist() == [[0, 1, 2], [5, 4, 3]]


@pytest.mark.parametrize("snaked", [False, True])
def test_grid_centre_is_the_crystal_centre(snaked: bool) -> None:
    grid = GridScan(steps_x=9, steps_y=7, dx_um=10, dy_um=10, snaked=snaked)
    yy, xx = np.mgrid[0:7, 0:9]
    counts_2d = np.round(100 * np.exp(-((xx - 5.3) ** 2 + (yy - 2.6) ** 2) / 2.0))
    counts = np.empty(63)
    counts[grid_image_index(grid).ravel()] = counts_2d.ravel()
    centre = find_grid_centre(grid, counts, first_image_number=1)
    assert centre is not None
    assert abs(centre.x - 5.3) < 0.3 and abs(centre.y - 2.6) < 0.3
    assert centre.box_min_x <= 5 <= centre.box_max_x
    assert centre.image_number == int(grid_image_index(grid)[3, 5]) + 1


def test_grid_without_diffraction_has_no_centre() -> None:
    grid = GridScan(steps_x=2, steps_y=2, dx_um=1, dy_um=1)
    assert find_grid_centre(grid, np.zeros(4)) is None


def test_grid_rejects_a_wrong_number_of_images() -> None:
    grid = GridScan(steps_x=2, steps_y=2, dx_um=1, dy_um=1)
    with pytest.raises(ValueError, match="needs 4 spot counts"):
        find_grid_centre(grid, np.zeros(5))
