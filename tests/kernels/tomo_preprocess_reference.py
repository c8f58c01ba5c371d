"""Plain numpy/scipy references of the tomography pre-processing kernels
(`ext/_tomo_preprocess.pyx`): slow, obviously right."""

from __future__ import annotations

import numpy as np
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
