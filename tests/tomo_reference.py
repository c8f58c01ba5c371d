"""Plain numpy/scipy references of the tomography kernels: slow, obviously right."""

from __future__ import annotations

import numpy as np
from prefect_beamline.ext.backproject import fourier_filter, padded_size
from scipy import ndimage


def reference_normalise(
    projections: np.ndarray, flat: np.ndarray, dark: np.ndarray, min_transmission: float
) -> np.ndarray:
    """-log((p - dark) / (flat - dark)) per pixel, clamped; sinogram order (row, angle, col)."""
    p = projections.astype(np.float32)
    open_beam = (flat - dark).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        transmission = (p - dark.astype(np.float32)) / open_beam
    transmission = np.where(transmission > min_transmission, transmission, min_transmission)
    result = -np.log(transmission.astype(np.float32))
    result = np.where(open_beam > 0, result, 0.0).astype(np.float32)
    return np.ascontiguousarray(result.transpose(1, 0, 2))


def reference_ring_filter(sinograms: np.ndarray, width: int) -> np.ndarray:
    """Each column minus (its mean over angles - median of neighbouring column means)."""
    means = sinograms.astype(np.float64).mean(axis=1)
    smooth = ndimage.median_filter(means, size=(1, width), mode="nearest")
    return (sinograms - (means - smooth)[:, None, :]).astype(np.float32)


def reference_fbp(
    sinogram: np.ndarray, angles_rad: np.ndarray, centre: float, filter_name: str, size: int
) -> np.ndarray:
    """One slice by FBP, angle by angle with np.interp (as scikit-image's iradon does),
    for any centre; no circle mask."""
    n_detector = sinogram.shape[1]
    padded = padded_size(n_detector)
    response = fourier_filter(padded, filter_name)
    filtered = np.real(
        np.fft.ifft(np.fft.fft(sinogram.astype(np.float64), n=padded, axis=1) * response, axis=1)
    )[:, :n_detector]
    half = size // 2
    rows, columns = np.mgrid[:size, :size]
    x, y = columns - half, half - rows
    image = np.zeros((size, size))
    detector = np.arange(n_detector, dtype=np.float64)
    for projection, angle in zip(filtered, angles_rad, strict=True):
        t = centre + x * np.cos(angle) + y * np.sin(angle)
        image += np.interp(t, detector, projection, left=0.0, right=0.0)
    return image * np.pi / (2 * len(angles_rad))
