"""Plain numpy reference of the Fourier reconstruction (`ext/_gridrec.pyx`): the exact
sum that gridrec approximates, slow and obviously right.

Filtered back projection in which each filtered projection is interpolated exactly, as
the trigonometric polynomial its G-point FFT defines, instead of linearly: for every
angle and pixel, f(t) = (1/G) sum_k S_k H_k exp(2 pi i k t / G) at
t = centre + x cos + y sin, with the same filter H and scale pi / (2 n_angles) as
`backproject_reference.reference_fbp`, times the frequency response of the linear
interpolation FBP does, sinc²(k / G) (gridrec applies it: same resolution). Gridding
only approximates this non-uniform sum; the reference evaluates it term by term.
"""

from __future__ import annotations

import numpy as np

from prefect_beamline.ext.backproject import fourier_filter


def reference_fourier_fbp(
    sinogram: np.ndarray,
    angles_rad: np.ndarray,
    centre: float,
    filter_name: str,
    size: int,
    grid: int,
) -> np.ndarray:
    """One slice (N, N), no circle mask, from a sinogram (angle, detector) whose
    projections are zero padded to `grid` points (gridrec's grid size)."""
    response = fourier_filter(grid, filter_name)
    response = 0.5 * (response + np.roll(response[::-1], 1))  # the even part, as FBP
    response *= np.sinc(np.fft.fftfreq(grid)) ** 2  # linear interpolation's response
    k = np.arange(grid // 2 + 1)
    # The real projection's spectrum is Hermitian: terms k and -k are twice the real
    # part of term k (k = 0 and the Nyquist term G/2 once).
    twice = np.where((k == 0) | (k == grid // 2), 1.0, 2.0)
    spectra = np.fft.rfft(sinogram.astype(np.float64), n=grid, axis=1)
    spectra *= response[: grid // 2 + 1] * twice
    half = size // 2
    rows, columns = np.mgrid[:size, :size]
    x, y = (columns - half).ravel(), (half - rows).ravel()
    image = np.zeros(size * size)
    for spectrum, angle in zip(spectra, angles_rad, strict=True):
        t = centre + x * np.cos(angle) + y * np.sin(angle)
        image += np.real(np.exp(2j * np.pi * np.outer(t, k) / grid) @ spectrum) / grid
    return (image * np.pi / (2 * len(angles_rad))).reshape(size, size)
