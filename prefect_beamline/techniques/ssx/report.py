"""What a serial job shows people: per-frame table, profiles, summary.json, three plots
(hit rate over time, peaks per frame, summed profiles of hits and blanks), and the
Prefect UI's chunk table and markdown report."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.report import SUMMARY_FILE, figure_png, markdown_image, markdown_table, pyplot
from prefect_beamline.techniques.ssx.analysis import SerialSummary

PER_FRAME_FILE = "per_frame.csv"
PROFILES_FILE = "radial_profiles.h5"
PLOTS = ("hit_rate.png", "peaks_per_frame.png", "radial_profiles.png")


def write_result_files(
    folder: Path, summary: SerialSummary, profiles: np.ndarray
) -> list[tuple[Path, str]]:
    """per_frame.csv, radial_profiles.h5 (every frame's and the summed profiles),
    summary.json and the plots, each with its ISPyB attachment type."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / PER_FRAME_FILE
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_number", "n_peaks", "hit"])
        for offset, (n_peaks, hit) in enumerate(zip(summary.n_peaks, summary.hit, strict=True)):
            writer.writerow([summary.first_image + offset, int(n_peaks), int(hit)])
    profiles_file = folder / PROFILES_FILE
    with h5py.File(profiles_file, "w") as handle:
        handle["radial"] = summary.radial
        handle["radial"].attrs["units"] = summary.unit
        handle.create_dataset("frames", data=profiles, chunks=True, compression="gzip")
        handle["hits_sum"] = summary.hits_profile
        handle["blanks_sum"] = summary.blanks_profile
        handle["hit"] = summary.hit
    summary_file = folder / SUMMARY_FILE
    summary_file.write_text(json.dumps(summary.as_dict(), indent=2))
    plots = [folder / name for name in PLOTS]
    plots[0].write_bytes(hit_rate_png(summary))
    plots[1].write_bytes(peaks_histogram_png(summary))
    plots[2].write_bytes(profiles_png(summary))
    return [
        (table, "Result"),
        (summary_file, "Result"),
        (profiles_file, "Result"),
        *((plot, "Graph") for plot in plots),
    ]


def hit_rate_png(summary: SerialSummary) -> bytes:
    """Hit rate of each chunk against the time it finished: what the sample delivery
    team watches."""
    chunks = sorted(summary.chunks, key=lambda chunk: chunk.first_image)
    figure, axes = pyplot().subplots(figsize=(7, 3))
    start = min((chunk.finished_at for chunk in chunks), default=0.0)
    axes.plot(
        [chunk.finished_at - start for chunk in chunks],
        [100.0 * chunk.hit_rate for chunk in chunks],
        marker="o",
    )
    axes.set_xlabel("time since first chunk (s)")
    axes.set_ylabel("hit rate (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"Hit rate: {100 * summary.hit_rate:.1f} % of {summary.n_frames} frames")
    axes.grid(alpha=0.3)
    return figure_png(figure)


def peaks_histogram_png(summary: SerialSummary) -> bytes:
    figure, axes = pyplot().subplots(figsize=(7, 3))
    top = int(summary.n_peaks.max()) if summary.n_peaks.size else 1
    axes.hist(summary.n_peaks, bins=np.arange(0, top + 2) - 0.5 if top < 60 else 60)
    axes.set_xlabel("peaks per frame")
    axes.set_ylabel("frames")
    axes.set_yscale("log")
    axes.set_title("Peaks per frame")
    return figure_png(figure)


def profiles_png(summary: SerialSummary) -> bytes:
    """Mean radial profile of the hits and of the blanks (jet, ice and background)."""
    figure, axes = pyplot().subplots(figsize=(7, 3))
    for label, total, count in (
        ("hits", summary.hits_profile, summary.n_hits),
        ("blanks", summary.blanks_profile, summary.n_frames - summary.n_hits),
    ):
        if count:
            axes.plot(summary.radial, total / count, label=f"{label} ({count})")
    axes.set_xlabel("q (nm⁻¹)" if summary.unit.startswith("q") else "2θ (°)")
    axes.set_ylabel("mean intensity")
    axes.legend()
    axes.set_title("Radial profiles")
    return figure_png(figure)


def report_markdown(
    collection: CollectionDescription, summary: SerialSummary, plots: list[Path]
) -> str:
    stats: dict[str, Any] = summary.as_dict()
    lines = [
        f"# Serial crystallography: dc{collection.collection_id} ({collection.beamline}, "
        f"{collection.visit})",
        "",
        *markdown_table(
            ["frames", "hits", "hit rate (%)", "peaks per hit"],
            [
                [
                    stats["n_frames"],
                    stats["n_hits"],
                    f"{100 * summary.hit_rate:.1f}",
                    stats["mean_peaks_per_hit"],
                ]
            ],
        ),
        "",
        *(markdown_image(plot) for plot in plots),
    ]
    return "\n".join(lines)


def publish_artifacts(
    collection: CollectionDescription, summary: SerialSummary, plots: list[Path]
) -> None:
    """The chunk table and the markdown report with the plots, as Prefect artifacts."""
    key = f"ssx-dc{collection.collection_id}"
    create_table_artifact(
        key=f"{key}-chunks",
        table=[asdict(chunk) for chunk in sorted(summary.chunks, key=lambda c: c.first_image)],
        description=f"Hit rate per chunk, data collection {collection.collection_id}",
    )
    create_markdown_artifact(
        key=f"{key}-report", markdown=report_markdown(collection, summary, plots)
    )
