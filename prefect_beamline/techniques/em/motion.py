"""Beam-induced motion of a movie: global shifts, then a smooth local field from patches.

Frames are aligned iteratively against the running sum of all other aligned frames
(MotionCor2's scheme: excluding the frame itself keeps its noise out of its reference),
by the peak of a B-factor-filtered cross-correlation with a parabolic sub-pixel fit.
Shifts are in pixels of the frames given, relative to the first frame: frame f shows
the specimen displaced by `shifts[f]` = (dx, dy), so the aligned frame samples x + s.

The local field is a quadratic surface in the image coordinates per frame, fitted to
per-patch residual shifts smoothed along time by a cubic: what the full-resolution
kernel (`prefect_beamline.ext.motioncor.shift_accumulate`) evaluates at every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from prefect_beamline.ext.motioncor import cross_spectra
from prefect_beamline.techniques.em.ctf import frequency_grid

N_FIELD_TERMS = 6  # 1, u, v, u², uv, v² with u, v in [-0.5, 0.5]


@dataclass(frozen=True)
class MotionModel:
    """Per-frame shift field: coefficients (n_frames, 2, 6) in full-resolution pixels.

    `global_shifts` (n_frames, 2) are the whole-frame (dx, dy); `patch_shifts`
    (n_frames, patches_y, patches_x, 2) the smoothed local residuals measured.
    """

    global_shifts: np.ndarray
    coefficients: np.ndarray
    patch_shifts: np.ndarray | None
    patches: tuple[int, int]

    @property
    def n_frames(self) -> int:
        return int(self.global_shifts.shape[0])


def _shift_ramp(kx: np.ndarray, ky: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """exp(2πi k·s) as an outer product: f(x + s) <-> F(k) exp(2πi k·s)."""
    ramp_x = np.exp((2j * np.pi * dx) * kx).astype(np.complex64)
    ramp_y = np.exp((2j * np.pi * dy) * ky).astype(np.complex64)
    return ramp_y * ramp_x


def _vertex(minus: float, centre: float, plus: float) -> float:
    """Sub-sample offset of a peak from three samples: Gaussian (parabola of the logs)
    when all are positive, as a B-factor-filtered correlation peak is; else a parabola."""
    if minus > 0 and centre > 0 and plus > 0:
        minus, centre, plus = np.log(minus), np.log(centre), np.log(plus)
    denominator = minus - 2.0 * centre + plus
    if denominator >= 0:
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / denominator, -0.5, 0.5))


def _reach(shape: tuple[int, int], max_shift: float) -> tuple[int, int]:
    """How far (rows, columns) from zero shift the peak is searched: ±max_shift, inside
    the map with a sample to spare on each side for the sub-pixel fit."""
    ny, nx = shape
    return int(min(max_shift, ny // 2 - 2)), int(min(max_shift, nx // 2 - 2))


def _correlation_rows(products: np.ndarray, shape: tuple[int, int], reach_y: int) -> np.ndarray:
    """Rows -reach_y..reach_y (wrapped, in that order) of the inverse FFT of each of
    `products` (n, ny, nx//2 + 1): the only rows the peak search reads. The inverse along
    the columns is done in full, the one along the rows for those rows only, which saves
    about 40 % of the FFT work of whole maps at 1024² (same values: irfft2 is these two
    transforms)."""
    ny, nx = shape
    rows = np.arange(-reach_y, reach_y + 1) % ny
    columns_done = scipy.fft.ifft(products, axis=-2, workers=-1)
    return np.asarray(scipy.fft.irfft(columns_done[:, rows, :], n=nx, axis=-1, workers=-1))


def _peak(window_rows: np.ndarray, reach: tuple[int, int]) -> tuple[float, float]:
    """Sub-pixel (dx, dy) of the highest correlation within ±reach of zero shift, from the
    map's rows -reach_y..reach_y (`_correlation_rows`)."""
    reach_y, reach_x = reach
    nx = window_rows.shape[1]
    columns = np.arange(-reach_x, reach_x + 1) % nx
    window = window_rows[:, columns]
    flat_index = np.unravel_index(int(np.argmax(window)), window.shape)
    iy = int(np.clip(flat_index[0], 1, window.shape[0] - 2))
    ix = int(np.clip(flat_index[1], 1, window.shape[1] - 2))
    dy = iy - reach_y + _vertex(window[iy - 1, ix], window[iy, ix], window[iy + 1, ix])
    dx = ix - reach_x + _vertex(window[iy, ix - 1], window[iy, ix], window[iy, ix + 1])
    return dx, dy


def align_spectra(
    spectra: np.ndarray,
    shape: tuple[int, int],
    *,
    bfactor_pixels: float = 150.0,
    iterations: int = 4,
    tolerance: float = 0.05,
    max_shift: float = 80.0,
) -> np.ndarray:
    """Shifts (n, 2) of each frame relative to the first, in pixels of the frames, from
    their rfft2 spectra (n, ny, nx//2 + 1), complex64; `shape` is (ny, nx).

    `bfactor_pixels` is the B-factor in pixels² (MotionCor2's -Bft divided by the
    pixel size squared): the cross-correlation is low-pass filtered by exp(-B k²/4).
    """
    n = spectra.shape[0]
    kx, ky = frequency_grid(shape, dtype=np.float32)
    weight = np.exp(-bfactor_pixels * (kx * kx + ky * ky) / 4.0).astype(np.float32)
    weight[0, 0] = 0.0
    shifts = np.zeros((n, 2))
    reach = _reach(shape, max_shift)
    spectra = np.ascontiguousarray(spectra, dtype=np.complex64)
    products = np.empty_like(spectra)
    for _ in range(iterations):
        phase_x = np.exp((2j * np.pi) * shifts[:, :1] * kx[0][None, :]).astype(np.complex64)
        phase_y = np.exp((2j * np.pi) * shifts[:, 1:] * ky[:, 0][None, :]).astype(np.complex64)
        cross_spectra(spectra, weight, phase_x, phase_y, out=products)
        rows = _correlation_rows(products, shape, reach[0])
        new = np.array([_peak(window_rows, reach) for window_rows in rows])
        new -= new[0]
        change = float(np.abs(new - shifts).max())
        shifts = new
        if change < tolerance:
            break
    return shifts


def shift_spectra(spectra: np.ndarray, shape: tuple[int, int], shifts: np.ndarray) -> np.ndarray:
    """Frames moved back by their shifts (Fourier, periodic): aligned to the first."""
    kx, ky = frequency_grid(shape, dtype=np.float32)
    moved = np.empty_like(spectra)
    for i in range(spectra.shape[0]):
        np.multiply(spectra[i], _shift_ramp(kx, ky, shifts[i, 0], shifts[i, 1]), out=moved[i])
    return np.asarray(scipy.fft.irfft2(moved, s=shape, workers=-1), dtype=np.float32)


def field_basis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The quadratic basis (…, 6) at normalised positions u, v in [-0.5, 0.5]."""
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)


def _smooth_in_time(track: np.ndarray) -> np.ndarray:
    """A cubic in frame number fitted to a (n, 2) trajectory, zero at the first frame."""
    n = track.shape[0]
    degree = min(3, n - 1)
    t = np.arange(n, dtype=np.float64)
    smooth = np.empty_like(track)
    for axis in range(2):
        coefficients = np.polyfit(t, track[:, axis], degree)
        smooth[:, axis] = np.polyval(coefficients, t)
    return smooth - smooth[0]


def estimate_motion(
    binned: np.ndarray,
    binning: int,
    *,
    patches: tuple[int, int] = (5, 5),
    bfactor_pixels: float = 500.0,
    patch_bfactor_pixels: float = 150.0,
    iterations: int = 3,
    patch_iterations: int = 2,
    min_patch_pixels: int = 48,
) -> MotionModel:
    """Global then patch motion of (binned) frames; coefficients in unbinned pixels.

    `patches` is (patches_x, patches_y); fewer are used when a patch would be smaller
    than `min_patch_pixels` binned pixels, none when the movie is too small for 2 x 2.
    """
    n, height, width = binned.shape
    spectra = scipy.fft.rfft2(binned.astype(np.float32, copy=False), workers=-1)
    global_shifts = align_spectra(
        spectra, (height, width), bfactor_pixels=bfactor_pixels, iterations=iterations
    )
    coefficients = np.zeros((n, 2, N_FIELD_TERMS))
    coefficients[:, :, 0] = global_shifts * binning
    patches_x = min(patches[0], width // min_patch_pixels)
    patches_y = min(patches[1], height // min_patch_pixels)
    if patches_x * patches_y < 4 or n < 3:
        return MotionModel(global_shifts * binning, coefficients, None, (0, 0))
    aligned = shift_spectra(spectra, (height, width), global_shifts)
    del spectra
    # FFT-friendly patch sizes (2^a 3^b 5^c): a 204-pixel patch costs twice a 200.
    patch_w = _fast_length_below(width // patches_x)
    patch_h = _fast_length_below(height // patches_y)
    local = np.zeros((n, patches_y, patches_x, 2))
    centres_u = np.zeros((patches_y, patches_x))
    centres_v = np.zeros((patches_y, patches_x))
    for py in range(patches_y):
        for px in range(patches_x):
            y0 = py * (height // patches_y) + (height // patches_y - patch_h) // 2
            x0 = px * (width // patches_x) + (width // patches_x - patch_w) // 2
            stack = aligned[:, y0 : y0 + patch_h, x0 : x0 + patch_w]
            residual = align_spectra(
                scipy.fft.rfft2(stack, workers=-1),
                (int(stack.shape[1]), int(stack.shape[2])),
                bfactor_pixels=patch_bfactor_pixels,
                iterations=patch_iterations,
                max_shift=max(4.0, patch_w / 8),
            )
            local[:, py, px] = _smooth_in_time(residual)
            centres_u[py, px] = (x0 + 0.5 * patch_w) / width - 0.5
            centres_v[py, px] = (y0 + 0.5 * patch_h) / height - 0.5
    basis = field_basis(centres_u.ravel(), centres_v.ravel())
    terms = N_FIELD_TERMS if basis.shape[0] >= 9 else 3
    for frame in range(n):
        for axis in range(2):
            values = local[frame, :, :, axis].ravel()
            fitted = np.linalg.lstsq(basis[:, :terms], values, rcond=None)[0]
            coefficients[frame, axis, :terms] += fitted * binning
    return MotionModel(
        global_shifts * binning, coefficients, local * binning, (patches_x, patches_y)
    )


def _fast_length_below(n: int) -> int:
    """The largest length <= n whose only prime factors are 2, 3 and 5."""
    for length in range(n, 0, -1):
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
    return n


def accumulated_motion(shifts: np.ndarray) -> np.ndarray:
    """Frame-to-frame displacement lengths (n - 1,) of a (n, 2) trajectory."""
    return np.asarray(np.hypot(*np.diff(shifts, axis=0).T))
