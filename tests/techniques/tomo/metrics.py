"""How good a reconstructed slice is against the phantom: used by tests and benchmarks,
never by the flow."""

from __future__ import annotations

import numpy as np


def nrmse(reconstruction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error normalised by the truth's range (max - min), within mask."""
    if reconstruction.shape != truth.shape:
        raise ValueError(f"shapes differ: {reconstruction.shape} vs {truth.shape}")
    selected = np.ones(truth.shape, dtype=bool) if mask is None else mask
    error = reconstruction[selected].astype(np.float64) - truth[selected]
    spread = float(truth[selected].max() - truth[selected].min())
    return float(np.sqrt(np.mean(error**2)) / spread)


def circle_mask(size: int, margin: float = 0.0) -> np.ndarray:
    """Pixels of an N x N slice within radius N//2 - margin of the centre (N//2, N//2)."""
    half = size // 2
    y, x = np.mgrid[:size, :size] - half
    return np.asarray(x**2 + y**2 <= (half - margin) ** 2)


def ring_profile(image: np.ndarray) -> np.ndarray:
    """Mean of a slice over rings one pixel wide around its centre (N//2, N//2)."""
    half = image.shape[0] // 2
    y, x = np.mgrid[: image.shape[0], : image.shape[1]] - half
    radius = np.rint(np.hypot(x, y)).astype(int)
    inside = radius <= half
    sums = np.bincount(radius[inside], weights=image[inside].astype(np.float64))
    counts = np.bincount(radius[inside])
    return np.asarray(sums / np.maximum(counts, 1))
