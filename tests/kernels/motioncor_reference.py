"""Plain numpy references of the motion-correction kernels (`ext/_motioncor.pyx`).

Obviously right and slow: what the kernels must reproduce.
"""

from __future__ import annotations

import numpy as np


def gain_bin(raw: np.ndarray, gain: np.ndarray | None, factor: int) -> np.ndarray:
    corrected = raw.astype(np.float64) * (1.0 if gain is None else gain.astype(np.float64))
    ny, nx = raw.shape[0] // factor, raw.shape[1] // factor
    blocks = corrected[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    return blocks.mean(axis=(1, 3))


def tile_centres(n: int, tile: int) -> np.ndarray:
    """Per pixel, the centre of its tile (the last tile may be shorter)."""
    index = np.arange(n)
    start = (index // tile) * tile
    stop = np.minimum(start + tile, n)
    return start + 0.5 * (stop - start - 1)


def field(coefficients: np.ndarray, shape: tuple[int, int], tile: int = 1) -> np.ndarray:
    """The quadratic shift field, held constant over each tile x tile block."""
    ny, nx = shape
    u = (tile_centres(nx, tile) / nx - 0.5)[None, :] * np.ones((ny, 1))
    v = (tile_centres(ny, tile) / ny - 0.5)[:, None] * np.ones((1, nx))
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v])
    return np.tensordot(coefficients, basis, axes=(0, 0))


def shift_sample(
    raw: np.ndarray,
    gain: np.ndarray | None,
    coeff_x: np.ndarray,
    coeff_y: np.ndarray,
    tile: int = 1,
) -> np.ndarray:
    """The corrected frame sampled at (x + dx, y + dy), bilinear, each sample clamped to
    the frame (the field is held per tile, as the kernel holds it)."""
    image = raw.astype(np.float64) * (1.0 if gain is None else gain.astype(np.float64))
    ny, nx = raw.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx = field(coeff_x, raw.shape, tile)
    dy = field(coeff_y, raw.shape, tile)
    ix, iy = np.floor(dx), np.floor(dy)
    fx, fy = dx - ix, dy - iy
    x0 = np.clip(xx + ix, 0, nx - 1).astype(int)
    x1 = np.clip(xx + ix + 1, 0, nx - 1).astype(int)
    y0 = np.clip(yy + iy, 0, ny - 1).astype(int)
    y1 = np.clip(yy + iy + 1, 0, ny - 1).astype(int)
    return (1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1]) + fy * (
        (1 - fx) * image[y1, x0] + fx * image[y1, x1]
    )


def critical_exposure(k: np.ndarray, voltage_scale: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return (0.245 * k**-1.665 + 2.81) * voltage_scale


def dose_weighted_sum(
    group_sums: list[np.ndarray],
    doses: list[float],
    counts: list[int],
    pixel_size: float,
    voltage_scale: float,
) -> np.ndarray:
    """Σ_g W_g(k) F_g(k) · sqrt(N / Σ_g n_g W_g(k)²), back in real space."""
    shape = group_sums[0].shape
    ky = np.fft.fftfreq(shape[0], d=pixel_size)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_size)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    total = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex128)
    weight_sq = np.zeros(total.shape)
    for group, dose, n in zip(group_sums, doses, counts, strict=True):
        w = np.where(k == 0, 1.0, np.exp(-dose / (2 * critical_exposure(k, voltage_scale))))
        total += w * np.fft.rfft2(group)
        weight_sq += n * w * w
    total *= np.sqrt(sum(counts) / weight_sq)
    return np.fft.irfft2(total, s=shape)


def cross_spectra(
    spectra: np.ndarray, weight: np.ndarray, shifts: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """weight · S_i · conj(T - A_i) with A_i = S_i exp(2πi k·s_i), T = Σ A_i."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    aligned = np.stack(
        [
            s * np.exp(2j * np.pi * (kx * dx + ky * dy))
            for s, (dx, dy) in zip(spectra, shifts, strict=True)
        ]
    )
    total = aligned.sum(axis=0)
    return weight * spectra * np.conj(total - aligned)
