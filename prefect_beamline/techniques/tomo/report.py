"""What a tomography job shows people: previews of the volume's central planes,
summary.json, and the Prefect UI's summary table and markdown report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.report import SUMMARY_FILE, figure_png, markdown_image, markdown_table, pyplot
from prefect_beamline.techniques.tomo.analysis import TomogramRecord
from prefect_beamline.techniques.tomo.volume import central_slices

PREVIEW_FILES = {"xy": "slice_xy.png", "xz": "slice_xz.png", "yz": "slice_yz.png"}
PREVIEW_TITLES = {
    "xy": "central slice (xy)",
    "xz": "vertical plane (xz)",
    "yz": "vertical plane (yz)",
}


def tomo_slice_png(image: np.ndarray, title: str) -> bytes:
    """One plane of a reconstructed volume in grey, scaled to its 0.5-99.5 percentiles
    (a few hot ring or edge pixels must not wash out the sample)."""
    low, high = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    height, width = image.shape
    figure, axes = pyplot().subplots(figsize=(5, max(1.5, 5 * height / max(width, 1)) + 0.6))
    shown = axes.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    figure.colorbar(shown, ax=axes, label="attenuation (1/pixel)", shrink=0.8)
    axes.set_title(title)
    axes.set_axis_off()
    return figure_png(figure)


def write_previews(folder: Path, tomogram: TomogramRecord) -> TomogramRecord:
    """PNGs of the three orthogonal planes through the volume's centre; the record with
    their paths."""
    written = {}
    for plane, image in central_slices(Path(tomogram.volume_file)).items():
        path = folder / PREVIEW_FILES[plane]
        path.write_bytes(tomo_slice_png(image, PREVIEW_TITLES[plane]))
        written[plane] = str(path)
    return replace(
        tomogram,
        central_slice_image=written["xy"],
        xz_image=written["xz"],
        yz_image=written["yz"],
    )


def write_summary(
    folder: Path, summary: dict[str, Any], tomogram: TomogramRecord
) -> list[tuple[Path, str]]:
    """summary.json; returns every result file with its ISPyB attachment type, the
    volume first."""
    summary_file = folder / SUMMARY_FILE
    summary_file.write_text(json.dumps(summary, indent=2))
    return [
        (Path(tomogram.volume_file), "Result"),
        (summary_file, "Result"),
        *((Path(path), "Graph") for path in tomogram.previews.values()),
    ]


def report_markdown(
    collection: CollectionDescription, summary: dict[str, Any], tomogram: TomogramRecord
) -> str:
    """The run's report: scan, volume, centre and filters, then the three previews."""
    header = [
        "projections",
        "volume (z × y × x)",
        "centre of rotation (px)",
        "filter",
        "ring filter",
    ]
    row = [
        summary["n_projections"],
        " × ".join(str(size) for size in tomogram.shape),
        f"{tomogram.centre_of_rotation:.2f} ({tomogram.centre_method})",
        summary["filter_name"],
        "on" if summary["ring_filter"] else "off",
    ]
    lines = [
        f"# Tomography: dc{collection.collection_id} ({collection.beamline}, {collection.visit})",
        "",
        *markdown_table(header, [row]),
        "",
        f"Volume: `{tomogram.volume_file}`",
        "",
    ]
    for plane, path in tomogram.previews.items():
        lines += [f"**{plane}**", "", markdown_image(path), ""]
    return "\n".join(lines)


# The summary table's rows: each summary.json key as a person reads it, with its unit.
SUMMARY_ROWS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "n_projections": ("projections", str),
    "layout": ("file layout", str),
    "shape": ("volume (z × y × x voxels)", lambda shape: " × ".join(map(str, shape))),
    "slice_range": ("detector rows reconstructed", lambda rows: f"{rows[0]}–{rows[1]}"),
    "centre_of_rotation": ("centre of rotation (px)", lambda centre: f"{centre:.2f}"),
    "centre_method": ("centre found by", str),
    "method": ("reconstruction", str),
    "filter_name": ("filter", str),
    "ring_filter": ("ring filter", lambda on: "on" if on else "off"),
    "volume_file": ("volume file", str),
}


def summary_table(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table's rows, in SUMMARY_ROWS order; keys it does not know last, as
    they are."""
    known = [
        {"quantity": label, "value": shown(summary[key])}
        for key, (label, shown) in SUMMARY_ROWS.items()
        if key in summary
    ]
    other = [
        {"quantity": key, "value": str(value)}
        for key, value in summary.items()
        if key not in SUMMARY_ROWS
    ]
    return known + other


def publish_artifacts(
    collection: CollectionDescription, summary: dict[str, Any], tomogram: TomogramRecord
) -> None:
    """A summary table and the markdown report, as Prefect artifacts of this run."""
    key = f"tomo-dc{collection.collection_id}"
    create_table_artifact(
        key=f"{key}-summary",
        table=summary_table(summary),
        description=f"Tomographic reconstruction, data collection {collection.collection_id}",
    )
    create_markdown_artifact(
        key=f"{key}-report", markdown=report_markdown(collection, summary, tomogram)
    )
