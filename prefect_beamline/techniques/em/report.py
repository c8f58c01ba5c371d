"""What a cryo-EM job shows people: drift and power-spectrum PNGs per movie, the
session's histograms, and the Prefect UI's markdown reports and tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.report import (
    display_rows,
    figure_png,
    markdown_image,
    markdown_table,
    pyplot,
)
from prefect_beamline.techniques.em.ctf import (
    CTFFit,
    Microscope,
    ctf_values,
    frequency_grid,
    full_plane,
)
from prefect_beamline.techniques.em.records import EMMovieResult

DPI = 90


def drift_png(shifts: np.ndarray, pixel_size: float, title: str) -> bytes:
    """The whole-frame trajectory (Å from frame 1), frames numbered along it."""
    figure, axes = pyplot().subplots(figsize=(4.5, 4.5))
    xy = shifts * pixel_size
    axes.plot(xy[:, 0], xy[:, 1], marker="o", markersize=3, linewidth=1)
    axes.annotate("1", xy[0], textcoords="offset points", xytext=(4, 4))
    axes.annotate(str(len(xy)), xy[-1], textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("x drift (Å)")
    axes.set_ylabel("y drift (Å)")
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    return figure_png(figure, dpi=DPI)


def ctf_diagnostic(
    flat_spectrum: np.ndarray, fit: CTFFit, pixel_size: float, microscope: Microscope
) -> np.ndarray:
    """The centred (n, n) power spectrum, scaled to 0..1, with the fitted CTF² in its
    right half: CTFFIND's diagnostic image (what RELION shows as rlnCtfImage)."""
    n = flat_spectrum.shape[0]
    data = np.fft.fftshift(full_plane(flat_spectrum))
    kx, ky = frequency_grid((n, n), pixel_size)
    model_half = ctf_values(kx, ky, fit.parameters, microscope) ** 2
    model = np.fft.fftshift(full_plane(model_half.astype(np.float32)))
    low, high = np.percentile(data, [2, 98])
    combined = np.clip((data - low) / max(high - low, 1e-12), 0, 1)
    combined[:, n // 2 :] = model[:, n // 2 :]
    return combined.astype(np.float32)


def power_spectrum_png(
    flat_spectrum: np.ndarray, fit: CTFFit, pixel_size: float, microscope: Microscope, name: str
) -> bytes:
    """Background-subtracted spectrum (left half) beside the fitted CTF² (right half),
    titled with the fit."""
    ctf = fit.parameters
    combined = ctf_diagnostic(flat_spectrum, fit, pixel_size, microscope)
    figure, axes = pyplot().subplots(figsize=(4.5, 4.5))
    axes.imshow(combined, cmap="gray", origin="lower")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(
        f"{name}: {ctf.defocus_u / 1e4:.3f}/{ctf.defocus_v / 1e4:.3f} µm, "
        f"{ctf.angle_deg:.0f}°, fit {fit.fit_resolution_angstrom:.1f} Å",
        fontsize=9,
    )
    return figure_png(figure, dpi=DPI)


def session_histograms_png(
    defocus_um: Sequence[float], drift_angstrom: Sequence[float], resolution: Sequence[float]
) -> bytes:
    """Defocus, total drift and CTF fit resolution over the session's movies."""
    figure, axes = pyplot().subplots(1, 3, figsize=(11, 3))
    for ax, values, label in zip(
        axes,
        (defocus_um, drift_angstrom, resolution),
        ("defocus (µm)", "total motion (Å)", "CTF fit resolution (Å)"),
        strict=True,
    ):
        ax.hist(list(values), bins=min(20, max(3, len(values))), color="#4477aa")
        ax.set_xlabel(label)
        ax.set_ylabel("movies")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{len(defocus_um)} movies", fontsize=10)
    return figure_png(figure, dpi=DPI)


def movie_summary(result: EMMovieResult) -> dict[str, Any]:
    """The numbers of one movie in its run's result and completion event."""
    ctf = result.ctf
    return {
        "movie": result.movie_path,
        "n_frames": result.motion.n_frames,
        "total_motion_angstrom": result.motion.total_motion,
        "defocus_u": ctf.defocus_u if ctf else None,
        "defocus_v": ctf.defocus_v if ctf else None,
        "astigmatism_angle": ctf.angle_deg if ctf else None,
        "fit_resolution_angstrom": ctf.fit_resolution if ctf else None,
        "timings_s": result.timings,
    }


def movie_message(result: EMMovieResult) -> str:
    """The program's message for people: the movie, its defocus and fit resolution."""
    name = Path(result.movie_path).name
    if result.ctf is None:
        return f"{name}: no CTF fit"
    ctf = result.ctf
    return (
        f"{name}: defocus {ctf.defocus_u:.0f}/{ctf.defocus_v:.0f} Å, fit {ctf.fit_resolution:.1f} Å"
    )


def movie_markdown(collection: CollectionDescription, result: EMMovieResult) -> str:
    """One movie's report: frames, motion, CTF fit, the drift and power-spectrum plots."""
    motion, ctf = result.motion, result.ctf
    row = [
        motion.n_frames,
        f"{motion.total_motion:.1f}",
        f"{ctf.defocus_u:.0f} / {ctf.defocus_v:.0f}" if ctf else None,
        f"{ctf.angle_deg:.1f}" if ctf else None,
        f"{ctf.fit_resolution:.2f}" if ctf else None,
    ]
    header = [
        "frames",
        "total motion (Å)",
        "defocus U / V (Å)",
        "angle (°)",
        "fit resolution (Å)",
    ]
    lines = [
        f"# {Path(result.movie_path).stem} (dc{collection.collection_id}, {collection.visit})",
        "",
        *markdown_table(header, [row]),
        "",
        markdown_image(motion.drift_plot_path),
        markdown_image(motion.power_spectrum_path),
    ]
    return "\n".join(lines)


def publish_movie_artifacts(collection: CollectionDescription, result: EMMovieResult) -> None:
    """The movie's report as a Prefect artifact of this run."""
    create_markdown_artifact(
        key=f"em-dc{collection.collection_id}-movie", markdown=movie_markdown(collection, result)
    )


# The session's movie table as the UI shows it: header with unit, decimals.
MOVIE_COLUMNS = {
    "movie": ("movie", 0),
    "defocus_u": ("defocus U (Å)", 0),
    "defocus_v": ("defocus V (Å)", 0),
    "astigmatism_angle": ("astigmatism angle (°)", 1),
    "fit_resolution": ("CTF fit resolution (Å)", 2),
    "total_motion": ("total motion (Å)", 2),
}


def publish_session_artifacts(
    collection_id: int, statistics: dict[str, Any], histograms: Path
) -> None:
    """The session's movies as a table and its histograms as markdown, for the UI."""
    key = f"em-dc{collection_id}-session"
    movies = statistics["movies"]
    if movies:
        create_table_artifact(
            key=f"{key}-movies",
            table=display_rows(movies, MOVIE_COLUMNS),
            description=f"Movies of dc{collection_id}",
        )
    create_markdown_artifact(
        key=f"{key}-statistics",
        markdown=f"# Session dc{collection_id}: {statistics['n_movies']} movies\n\n"
        + markdown_image(histograms),
    )
