"""Plain numpy reference of the back projector (`ext/_backproject.pyx`): slow, obviously
right."""

from __future__ import annotations

import numpy as np

from prefect_beamline.ext.backproject import fourier_filter, padded_size


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
