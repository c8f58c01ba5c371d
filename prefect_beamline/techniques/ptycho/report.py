"""What a ptychography job shows people: phase and amplitude images, the error curve,
summary.json, and the Prefect UI's report and live error table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from prefect.artifacts import create_markdown_artifact

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.report import SUMMARY_FILE, figure_png, markdown_image, markdown_table, pyplot
from prefect_beamline.techniques.ptycho.analysis import scanned_area
from prefect_beamline.techniques.ptycho.records import PtychoResult
from prefect_beamline.techniques.ptycho.results_file import CHECKPOINT_FILE, read_reconstruction

IMAGE_FILES = ("object_phase.png", "object_amplitude.png")


def map_png(image: np.ndarray, title: str, label: str, pixel_m: float, cmap: str) -> bytes:
    """One real map (phase or amplitude) with a colour bar and axes in micrometres."""
    ny, nx = image.shape
    extent = (0.0, nx * pixel_m * 1e6, ny * pixel_m * 1e6, 0.0)
    figure, axes = pyplot().subplots(figsize=(5, 4.5))
    shown = axes.imshow(image, cmap=cmap, extent=extent)
    axes.set_xlabel("x (µm)")
    axes.set_ylabel("y (µm)")
    axes.set_title(title)
    figure.colorbar(shown, ax=axes, label=label)
    return figure_png(figure)


def error_png(errors: Sequence[float]) -> bytes:
    """The error metric per iteration, log scale: did the reconstruction converge?"""
    figure, axes = pyplot().subplots(figsize=(6, 3))
    axes.semilogy(np.arange(1, len(errors) + 1), errors, linewidth=1.2)
    axes.set_xlabel("iteration")
    axes.set_ylabel("Fourier error")
    axes.set_title("Error per iteration")
    axes.grid(alpha=0.3, which="both")
    return figure_png(figure)


def display_phase(
    obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray | None
) -> np.ndarray:
    """The object's phase with the arbitrary global offset removed: zero mean phase over
    the scanned area, so the image shows the sample, not the offset."""
    if positions_px is None:
        return np.angle(obj)
    lit = scanned_area(probe, positions_px, obj.shape)
    offset = np.angle(np.sum(obj[lit]))
    return np.angle(obj * np.exp(-1j * offset))


def write_result_files(folder: Path, result: PtychoResult) -> list[tuple[Path, str]]:
    """Phase and amplitude PNGs, the error curve and summary.json beside the HDF5 (the
    checkpoint goes: the reconstruction is whole); the job's result files, HDF5 first."""
    saved = read_reconstruction(Path(result.reconstruction_file))
    pixel_m = result.object_pixel_m or 0.0
    phase, amplitude = (folder / name for name in IMAGE_FILES)
    phase.write_bytes(
        map_png(
            display_phase(saved.obj, saved.probe, saved.positions_px),
            "Object phase (offset removed)",
            "rad",
            pixel_m,
            "viridis",
        )
    )
    amplitude.write_bytes(map_png(np.abs(saved.obj), "Object amplitude", "", pixel_m, "gray"))
    errors = folder / "error.png"
    errors.write_bytes(error_png(saved.errors))
    summary = folder / SUMMARY_FILE
    summary.write_text(json.dumps(asdict(result), indent=2))
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    return [
        (Path(result.reconstruction_file), "Result"),
        (phase, "Graph"),
        (amplitude, "Graph"),
        (errors, "Graph"),
        (summary, "Result"),
    ]


def error_table(errors: list[float], iterations: int) -> str:
    """Markdown: the error at a dozen iterations spread over the run so far."""
    marks = sorted({int(i) for i in np.linspace(1, len(errors), min(len(errors), 12))})
    lines = [
        f"# ePIE progress: {len(errors)}/{iterations} iterations",
        "",
        *markdown_table(["iteration", "error"], [[i, f"{errors[i - 1]:.4g}"] for i in marks]),
    ]
    return "\n".join(lines)


def publish_error_table(collection_id: int, errors: list[float], iterations: int) -> None:
    """The error so far as a markdown artifact, replaced at every checkpoint."""
    create_markdown_artifact(
        key=f"ptycho-dc{collection_id}-error",
        markdown=error_table(errors, iterations),
        description="Error metric so far (updated at every checkpoint)",
    )


def report_markdown(
    collection: CollectionDescription, result: PtychoResult, images: Sequence[Path]
) -> str:
    """The run's report: scan, algorithm, error and pixel size, then the images."""
    shape = result.pattern_shape
    pixel_nm = f"{result.object_pixel_m * 1e9:.1f}" if result.object_pixel_m else None
    row = [
        result.n_positions,
        f"{shape[0]}×{shape[1]}" if shape else None,
        result.algorithm,
        result.iterations,
        f"{result.final_error:.4g}" if result.final_error is not None else None,
        pixel_nm,
    ]
    header = ["positions", "patterns", "algorithm", "iterations", "final error", "pixel (nm)"]
    lines = [
        f"# Ptychography: dc{collection.collection_id} ({collection.beamline}, {collection.visit})",
        "",
        *markdown_table(header, [row]),
        "",
        *(markdown_image(image) for image in images),
    ]
    return "\n".join(lines)


def publish_artifacts(
    collection: CollectionDescription, result: PtychoResult, files: Sequence[tuple[Path, str]]
) -> None:
    """The markdown report with the phase and amplitude images, for the Prefect UI."""
    images = [path for path, _ in files if path.name in IMAGE_FILES]
    create_markdown_artifact(
        key=f"ptycho-dc{collection.collection_id}-report",
        markdown=report_markdown(collection, result, images),
    )


def summary_line(result: PtychoResult) -> str:
    """The program's message for people."""
    return (
        f"{result.algorithm} {result.iterations} iterations on {result.n_positions} "
        f"positions, error {result.final_error:.3g}"
    )
