"""What an MX job shows people: per_image.csv, summary.json, the spots plot or grid heat
map, and the Prefect UI's per-image table and markdown report."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_beamline.events import GridScan
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.report import (
    SUMMARY_FILE,
    display_rows,
    figure_png,
    markdown_image,
    markdown_table,
    pyplot,
)
from prefect_beamline.techniques.mx.analysis import (
    ImageQuality,
    grid_image_index,
    n_spots_per_image,
)

PER_IMAGE_FILE = "per_image.csv"


def write_result_files(
    folder: Path,
    images: Sequence[ImageQuality],
    summary: dict[str, Any],
    grid: GridScan | None,
) -> list[tuple[Path, str]]:
    """per_image.csv, summary.json and the plot (a "Graph"), each with its ISPyB
    attachment type."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / PER_IMAGE_FILE
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(ImageQuality)])
        writer.writeheader()
        writer.writerows(asdict(image) for image in images)
    summary_file = folder / SUMMARY_FILE
    summary_file.write_text(json.dumps(summary, indent=2))
    centre = summary.get("grid_centre")
    centre_xy = (centre["x"], centre["y"]) if centre else None
    n_spots = n_spots_per_image(images)
    if grid is not None and n_spots.size == grid.steps_x * grid.steps_y:
        plot = folder / "grid_heatmap.png"
        plot.write_bytes(grid_heatmap_png(grid, n_spots, centre_xy))
    else:
        plot = folder / "spots_per_image.png"
        plot.write_bytes(spots_per_image_png([image.image_number for image in images], n_spots))
    return [(table, "Result"), (summary_file, "Result"), (plot, "Graph")]


def spots_per_image_png(image_numbers: Sequence[int], n_spots: np.ndarray) -> bytes:
    """Spots found on each image of a rotation: the first plot an MX scientist checks."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = pyplot().subplots(figsize=(7, 3))
    axes.plot(image_numbers, n_spots, marker=".", linewidth=1)
    axes.set_xlabel("image number")
    axes.set_ylabel("spots")
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Spots per image")
    axes.grid(alpha=0.3)
    return figure_png(figure)


def grid_heatmap_png(
    grid: GridScan, n_spots: np.ndarray, centre_xy: tuple[float, float] | None = None
) -> bytes:
    """Spots per grid point, laid out as the grid is on the sample, with the X-ray centre."""
    counts = n_spots[grid_image_index(grid)]
    figure, axes = pyplot().subplots(figsize=(6, 6 * grid.steps_y / max(grid.steps_x, 1) + 1))
    shown = axes.imshow(counts, cmap="viridis", origin="upper")
    figure.colorbar(shown, ax=axes, label="spots")
    if centre_xy is not None:
        axes.plot(*centre_xy, marker="+", color="red", markersize=18, markeredgewidth=2)
    axes.set_xlabel(f"x step ({grid.dx_um:g} µm)")
    axes.set_ylabel(f"y step ({grid.dy_um:g} µm)")
    axes.set_title("Grid scan: spots per point")
    return figure_png(figure)


# The per-image table as the UI shows it: header with unit, decimals.
PER_IMAGE_COLUMNS = {
    "image_number": ("image", 0),
    "n_spots": ("spots", 0),
    "total_intensity": ("integrated intensity (counts)", 0),
    "d_min_angstrom": ("d_min (Å)", 2),
}


def report_markdown(
    collection: CollectionDescription, summary: dict[str, Any], plot_file: Path
) -> str:
    """The run's report: collection totals, the X-ray centre of a grid scan, the plot."""
    lines = [
        f"# MX spot finding: dc{collection.collection_id} ({collection.beamline}, "
        f"{collection.visit})",
        "",
        *markdown_table(
            ["images", "spots", "images with spots", "best d_min (Å)"],
            [
                [
                    summary["n_images"],
                    summary["n_spots_total"],
                    summary["images_with_spots"],
                    _rounded(summary["best_d_min_angstrom"], 2),
                ]
            ],
        ),
        "",
    ]
    centre = summary["grid_centre"]
    if centre:
        lines += [
            f"**X-ray centre** (grid steps): x = {centre['x']:.2f}, y = {centre['y']:.2f}; "
            f"box x {centre['box_min_x']}–{centre['box_max_x']}, "
            f"y {centre['box_min_y']}–{centre['box_max_y']}",
            "",
        ]
    lines.append(markdown_image(plot_file))
    return "\n".join(lines)


def publish_artifacts(
    collection: CollectionDescription,
    images: Sequence[ImageQuality],
    summary: dict[str, Any],
    plot_file: Path,
) -> None:
    """The per-image table and the markdown report, as Prefect artifacts of this run."""
    key = f"mx-dc{collection.collection_id}"
    create_table_artifact(
        key=f"{key}-per-image",
        table=display_rows((asdict(image) for image in images), PER_IMAGE_COLUMNS),
        description=f"Per-image spot finding, data collection {collection.collection_id}",
    )
    create_markdown_artifact(
        key=f"{key}-report", markdown=report_markdown(collection, summary, plot_file)
    )


def _rounded(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals)
