"""Per-image MX quality indicators and grid-scan X-ray centring, from found spots.

These are the numbers a beamline scientist reads after a collection: how many spots
each image has, how much signal, how far out they reach, and for a grid scan where on
the sample the crystal diffracts best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefect_beamline.events import GridScan

# Fewer spots than this give no meaningful resolution estimate.
MIN_SPOTS_FOR_RESOLUTION = 10
# Quantile of 1/d² over an image's spots taken as its resolution limit: robust to a few
# spurious spots (cosmic rays, zingers) far out, while following the outermost shell.
RESOLUTION_QUANTILE = 0.95


@dataclass(frozen=True)
class ImageResult:
    """Per-image outcome of spot finding (one row of the per-image table)."""

    image_number: int
    n_spots: int
    total_intensity: float
    d_min_angstrom: float | None


@dataclass(frozen=True)
class GridCentre:
    """Where a grid scan diffracts best, in grid steps (0-based; x fast, y slow)."""

    x: float
    y: float
    box_min_x: int
    box_min_y: int
    box_max_x: int
    box_max_y: int
    max_count: int
    image_number: int


def estimate_d_min(d_spacings_angstrom: np.ndarray) -> float | None:
    """Resolution limit of one image from its spots' d-spacings (Å).

    The quantile is taken in 1/d², where spot density is uniform for a crystal, so it
    tracks the outermost shell rather than the mean. None when too few spots.
    """
    finite = d_spacings_angstrom[np.isfinite(d_spacings_angstrom)]
    if finite.size < MIN_SPOTS_FOR_RESOLUTION:
        return None
    inverse_d_squared = 1.0 / finite**2
    return float(1.0 / np.sqrt(np.quantile(inverse_d_squared, RESOLUTION_QUANTILE)))


def grid_image_index(grid: GridScan) -> np.ndarray:
    """(steps_y, steps_x) array of 0-based image indices for a row-by-row grid scan."""
    index = np.arange(grid.steps_x * grid.steps_y).reshape(grid.steps_y, grid.steps_x)
    if grid.snaked:
        index[1::2] = index[1::2, ::-1]
    return index


def find_grid_centre(
    grid: GridScan, spot_counts: np.ndarray, first_image_number: int = 1
) -> GridCentre | None:
    """X-ray centre of a grid scan from per-image spot counts (in image order).

    The crystal is the connected region of grid points holding at least half the best
    count around the best point; its count-weighted centre of mass and bounding box are
    returned. None when no image has spots.
    """
    from scipy import ndimage  # imported when needed: keeps flow start-up fast

    expected = grid.steps_x * grid.steps_y
    if spot_counts.shape != (expected,):
        raise ValueError(
            f"grid of {grid.steps_x} x {grid.steps_y} needs {expected} spot counts, "
            f"got {spot_counts.shape}"
        )
    counts = spot_counts[grid_image_index(grid)].astype(np.float64)
    best = int(counts.max())
    if best <= 0:
        return None
    best_y, best_x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    labels, _ = ndimage.label(counts >= 0.5 * best)
    region = labels == labels[best_y, best_x]
    weights = np.where(region, counts, 0.0)
    centre_y, centre_x = ndimage.center_of_mass(weights)
    rows, cols = np.nonzero(region)
    return GridCentre(
        x=float(centre_x),
        y=float(centre_y),
        box_min_x=int(cols.min()),
        box_min_y=int(rows.min()),
        box_max_x=int(cols.max()),
        box_max_y=int(rows.max()),
        max_count=best,
        image_number=int(grid_image_index(grid)[best_y, best_x]) + first_image_number,
    )
