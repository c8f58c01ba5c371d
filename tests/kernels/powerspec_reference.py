"""Plain numpy references of the power-spectrum averages (`ext/_powerspec.pyx`).

Obviously right and slow: what the kernels must reproduce.
"""

from __future__ import annotations

import numpy as np


def _half_plane_coordinates(n: int) -> tuple[np.ndarray, np.ndarray]:
    ky = np.where(np.arange(n) <= n // 2, np.arange(n), np.arange(n) - n)[:, None]
    kx = np.arange(n // 2 + 1)[None, :]
    return np.broadcast_to(kx, (n, n // 2 + 1)), np.broadcast_to(ky, (n, n // 2 + 1))


def elliptical_average(
    spectrum: np.ndarray, a: float, b: float, c: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    kx, ky = _half_plane_coordinates(spectrum.shape[0])
    r2 = a * kx * kx + 2 * b * kx * ky + c * ky * ky
    valid = r2 >= 0
    index = np.floor(np.sqrt(np.where(valid, r2, 0)) + 0.5).astype(int)
    valid &= index < n_bins
    sums = np.bincount(index[valid], weights=spectrum[valid], minlength=n_bins)
    counts = np.bincount(index[valid], minlength=n_bins).astype(float)
    return sums, counts


def sector_average(
    spectrum: np.ndarray, n_sectors: int, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    kx, ky = _half_plane_coordinates(spectrum.shape[0])
    index = np.floor(np.hypot(kx, ky) + 0.5).astype(int)
    theta = np.arctan2(ky, kx)
    sector = np.clip(((theta + np.pi / 2) / np.pi * n_sectors).astype(int), 0, n_sectors - 1)
    valid = (index < n_bins) & ~((kx == 0) & (ky == 0))
    flat = sector[valid] * n_bins + index[valid]
    sums = np.bincount(flat, weights=spectrum[valid], minlength=n_sectors * n_bins)
    counts = np.bincount(flat, minlength=n_sectors * n_bins).astype(float)
    return sums.reshape(n_sectors, n_bins), counts.reshape(n_sectors, n_bins)
