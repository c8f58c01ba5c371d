"""PNG images of a ptychographic reconstruction (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def map_png(image: np.ndarray, title: str, label: str, pixel_m: float, cmap: str) -> bytes:
    """One real map (phase or amplitude) with a colour bar and axes in micrometres."""
    ny, nx = image.shape
    extent = (0.0, nx * pixel_m * 1e6, ny * pixel_m * 1e6, 0.0)
    figure, axes = plt.subplots(figsize=(5, 4.5))
    shown = axes.imshow(image, cmap=cmap, extent=extent)
    axes.set_xlabel("x (µm)")
    axes.set_ylabel("y (µm)")
    axes.set_title(title)
    figure.colorbar(shown, ax=axes, label=label)
    return _png(figure)


def error_png(errors: Sequence[float]) -> bytes:
    """The error metric per iteration, log scale: did the reconstruction converge?"""
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.semilogy(np.arange(1, len(errors) + 1), errors, linewidth=1.2)
    axes.set_xlabel("iteration")
    axes.set_ylabel("Fourier error")
    axes.set_title("Error per iteration")
    axes.grid(alpha=0.3, which="both")
    return _png(figure)
