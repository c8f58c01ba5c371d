"""Per-image MX quality indicators and grid-scan X-ray centring, from found spots.

These are the numbers a beamline scientist reads after a collection: how many spots
each image has, how much signal, how far out they reach, and for a grid scan where on
the sample the crystal diffracts best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from prefect_beamline.events import GridScan

# Fewer spots than this give no meaningful resolution estimate.
MIN_SPOTS_FOR_RESOLUTION = 10
# Quantile of 1/d² over an image's spots taken as its resolution limit: robust to a few
# spurious spots (cosmic rays, zingers) far out, while following the outermost shell.
RESOLUTION_QUANTILE = 0.95
# ISPyB's XrayCentring.status enum.
XRAY_CENTRING_STATUSES = ("success", "failed", "pending")


@dataclass(frozen=True, slots=True)
class ImageQuality:
    """Spot finding on one image: a row of per_image.csv, of the UI's table and of the
    LIMS's ImageQualityIndicators.

    `n_spots_no_ice` (spots off ice rings) is stored when a finder gives it; ours does not.
    `n_overloads` counts the image's valid pixels masked for it: the detector's overflow
    value (2^n - 1) or counts above its saturation_value; they are in no intensity.
    """

    image_number: int
    n_spots: int
    n_spots_no_ice: int | None = field(default=None, kw_only=True)
    total_intensity: float
    d_min_angstrom: float | None
    n_overloads: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class GridResult:
    """Where a grid scan diffracts best, in grid steps (0-based; x fast, y slow): the
    summary's `grid_centre` and the LIMS's XrayCentringResult.

    `max_count` is the best image's spot count, `max_voxel_x/y` its grid point,
    `n_voxels` and `total_count` the size and summed count of the crystal region.
    `image_number` (the best image) is not a LIMS column: None when read back.
    """

    x: float
    y: float
    box_min_x: float
    box_min_y: float
    box_max_x: float
    box_max_y: float
    max_count: float
    status: str = "success"
    max_voxel_x: int | None = field(default=None, kw_only=True)
    max_voxel_y: int | None = field(default=None, kw_only=True)
    n_voxels: int | None = field(default=None, kw_only=True)
    total_count: float | None = field(default=None, kw_only=True)
    image_number: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.status not in XRAY_CENTRING_STATUSES:
            raise ValueError(
                f"GridResult.status must be one of {XRAY_CENTRING_STATUSES}, got {self.status!r}"
            )
        if self.box_min_x > self.box_max_x or self.box_min_y > self.box_max_y:
            raise ValueError(
                f"GridResult bounding box min ({self.box_min_x}, {self.box_min_y}) exceeds "
                f"max ({self.box_max_x}, {self.box_max_y})"
            )


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
) -> GridResult | None:
    """X-ray centre of a grid scan from per-image spot counts (in image order).

    The crystal is the connected region of grid points holding at least half the best
    count around the best point; returns its count-weighted centre of mass, bounding box,
    size and summed count, and the best point. None when no image has spots.
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
    return GridResult(
        x=float(centre_x),
        y=float(centre_y),
        box_min_x=int(cols.min()),
        box_min_y=int(rows.min()),
        box_max_x=int(cols.max()),
        box_max_y=int(rows.max()),
        max_count=best,
        max_voxel_x=int(best_x),
        max_voxel_y=int(best_y),
        n_voxels=int(region.sum()),
        total_count=float(weights.sum()),
        image_number=int(grid_image_index(grid)[best_y, best_x]) + first_image_number,
    )


def n_spots_per_image(images: Sequence[ImageQuality]) -> np.ndarray:
    """Spots per image, in the order given."""
    return np.array([image.n_spots for image in images], dtype=np.int64)


def summarise(images: Sequence[ImageQuality], grid_result: GridResult | None) -> dict[str, Any]:
    """The collection-level numbers of summary.json, the report and the completion event."""
    n_spots = n_spots_per_image(images)
    resolutions = [image.d_min_angstrom for image in images if image.d_min_angstrom is not None]
    return {
        "n_images": len(images),
        "n_spots_total": int(n_spots.sum()),
        "n_spots_median": float(np.median(n_spots)) if len(images) else 0.0,
        "images_with_spots": int(np.count_nonzero(n_spots)),
        "best_d_min_angstrom": min(resolutions) if resolutions else None,
        "grid_centre": asdict(grid_result) if grid_result else None,
    }
