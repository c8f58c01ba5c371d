"""PNG plots for results folders and Prefect artifacts (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from prefect_beamline.events import GridScan


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def spots_per_image_png(image_numbers: Sequence[int], n_spots: np.ndarray) -> bytes:
    """Spots found on each image of a rotation: the first plot an MX scientist checks."""
    figure, axes = plt.subplots(figsize=(7, 3))
    axes.plot(image_numbers, n_spots, marker=".", linewidth=1)
    axes.set_xlabel("image number")
    axes.set_ylabel("spots")
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Spots per image")
    axes.grid(alpha=0.3)
    return _png(figure)


def grid_heatmap_png(
    grid: GridScan, n_spots: np.ndarray, centre_xy: tuple[float, float] | None = None
) -> bytes:
    """Spots per grid point, laid out as the grid is on the sample, with the X-ray centre."""
    from prefect_beamline.analysis.mx import grid_image_index

    counts = n_spots[grid_image_index(grid)]
    figure, axes = plt.subplots(figsize=(6, 6 * grid.steps_y / max(grid.steps_x, 1) + 1))
    shown = axes.imshow(counts, cmap="viridis", origin="upper")
    figure.colorbar(shown, ax=axes, label="spots")
    if centre_xy is not None:
        axes.plot(*centre_xy, marker="+", color="red", markersize=18, markeredgewidth=2)
    axes.set_xlabel(f"x step ({grid.dx_um:g} µm)")
    axes.set_ylabel(f"y step ({grid.dy_um:g} µm)")
    axes.set_title("Grid scan: spots per point")
    return _png(figure)


def tomo_slice_png(image: np.ndarray, title: str) -> bytes:
    """One plane of a reconstructed volume in grey, scaled to its 0.5-99.5 percentiles
    (a few hot ring or edge pixels must not wash out the sample)."""
    low, high = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    height, width = image.shape
    figure, axes = plt.subplots(figsize=(5, max(1.5, 5 * height / max(width, 1)) + 0.6))
    shown = axes.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    figure.colorbar(shown, ax=axes, label="attenuation (1/pixel)", shrink=0.8)
    axes.set_title(title)
    axes.set_axis_off()
    return _png(figure)
