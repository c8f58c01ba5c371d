"""Cryo-EM PNG plots: drift trajectory, power spectrum with the fitted CTF, session
histograms (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from prefect_beamline.analysis.ctf import (
    CTFParameters,
    Microscope,
    ctf_values,
    frequency_grid,
    full_plane,
)


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def drift_png(shifts: np.ndarray, pixel_size: float, title: str) -> bytes:
    """The whole-frame trajectory (Å from frame 1), frames numbered along it."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    xy = shifts * pixel_size
    axes.plot(xy[:, 0], xy[:, 1], marker="o", markersize=3, linewidth=1)
    axes.annotate("1", xy[0], textcoords="offset points", xytext=(4, 4))
    axes.annotate(str(len(xy)), xy[-1], textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("x drift (Å)")
    axes.set_ylabel("y drift (Å)")
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    return _png(figure)


def power_spectrum_png(
    flat_spectrum: np.ndarray,
    ctf: CTFParameters,
    pixel_size: float,
    microscope: Microscope,
    title: str,
) -> bytes:
    """Background-subtracted spectrum (left half) beside the fitted CTF² (right half)."""
    n = flat_spectrum.shape[0]
    data = np.fft.fftshift(full_plane(flat_spectrum))
    kx, ky = frequency_grid((n, n), pixel_size)
    model_half = ctf_values(kx, ky, ctf, microscope) ** 2
    model = np.fft.fftshift(full_plane(model_half.astype(np.float32)))
    low, high = np.percentile(data, [2, 98])
    scaled = np.clip((data - low) / max(high - low, 1e-12), 0, 1)
    combined = scaled.copy()
    combined[:, n // 2 :] = model[:, n // 2 :]
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.imshow(combined, cmap="gray", origin="lower")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=9)
    return _png(figure)


def session_histograms_png(
    defocus_um: Sequence[float], drift_angstrom: Sequence[float], resolution: Sequence[float]
) -> bytes:
    """Defocus, total drift and CTF fit resolution over the session's movies."""
    figure, axes = plt.subplots(1, 3, figsize=(11, 3))
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
    return _png(figure)
