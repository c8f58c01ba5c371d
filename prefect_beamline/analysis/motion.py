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


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    ky = scipy.fft.fftfreq(ny).astype(np.float32)[:, None]
    kx = scipy.fft.rfftfreq(nx).astype(np.float32)[None, :]
    return kx, ky


def _shift_ramp(
    kx: np.ndarray, ky: np.ndarray, dx: float, dy: float
) -> np.ndarray:  # f(x + s) <-> F(k) exp(2πi k·s)
    return np.exp((2j * np.pi) * (kx * dx + ky * dy)).astype(np.complex64)


def _peak(cc: np.ndarray, max_shift: float) -> tuple[float, float]:
    """Sub-pixel (dx, dy) of the highest correlation within ±max_shift (parabolic fit)."""
    ny, nx = cc.shape
    reach_y = int(min(max_shift, ny // 2 - 2))
    reach_x = int(min(max_shift, nx // 2 - 2))
    window = np.roll(cc, (reach_y, reach_x), axis=(0, 1))[: 2 * reach_y + 1, : 2 * reach_x + 1]
    flat_index = np.unravel_index(int(np.argmax(window)), window.shape)
    iy = int(np.clip(flat_index[0], 1, window.shape[0] - 2))
    ix = int(np.clip(flat_index[1], 1, window.shape[1] - 2))

    def vertex(minus: float, centre: float, plus: float) -> float:
        denominator = minus - 2.0 * centre + plus
        return 0.0 if denominator >= 0 else float(0.5 * (minus - plus) / denominator)

    dy = iy - reach_y + vertex(window[iy - 1, ix], window[iy, ix], window[iy + 1, ix])
    dx = ix - reach_x + vertex(window[iy, ix - 1], window[iy, ix], window[iy, ix + 1])
    return dx, dy


def align_stack(
    frames: np.ndarray,
    *,
    bfactor_pixels: float = 150.0,
    iterations: int = 5,
    tolerance: float = 0.02,
    max_shift: float = 80.0,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Shifts (n, 2) of each frame relative to the first, in pixels of `frames`.

    `bfactor_pixels` is the B-factor in pixels² (MotionCor2's -Bft divided by the
    pixel size squared): the cross-correlation is low-pass filtered by exp(-B k²/4).
    """
    n = frames.shape[0]
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    spectra = scipy.fft.rfft2(frames.astype(np.float32, copy=False), workers=-1)
    kx, ky = _frequencies(shape)
    weight = np.exp(-bfactor_pixels * (kx * kx + ky * ky) / 4.0).astype(np.float32)
    weight[0, 0] = 0.0
    shifts = np.zeros((n, 2)) if initial is None else np.array(initial, dtype=np.float64)
    for _ in range(iterations):
        aligned = np.stack(
            [spectra[i] * _shift_ramp(kx, ky, shifts[i, 0], shifts[i, 1]) for i in range(n)]
        )
        total = aligned.sum(axis=0)
        new = np.empty_like(shifts)
        for i in range(n):
            reference = total - aligned[i]
            cc = scipy.fft.irfft2(spectra[i] * np.conj(reference) * weight, s=shape, workers=-1)
            new[i] = _peak(cc, max_shift)
        new -= new[0]
        change = float(np.abs(new - shifts).max())
        shifts = new
        if change < tolerance:
            break
    return shifts


def shift_frames(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Frames moved back by their shifts (Fourier, periodic): aligned to the first."""
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    kx, ky = _frequencies(shape)
    spectra = scipy.fft.rfft2(frames.astype(np.float32, copy=False), workers=-1)
    for i in range(frames.shape[0]):
        spectra[i] *= _shift_ramp(kx, ky, shifts[i, 0], shifts[i, 1])
    return np.asarray(scipy.fft.irfft2(spectra, s=shape, workers=-1), dtype=np.float32)


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
    bfactor_pixels: float = 150.0,
    iterations: int = 5,
    patch_iterations: int = 3,
    min_patch_pixels: int = 48,
) -> MotionModel:
    """Global then patch motion of (binned) frames; coefficients in unbinned pixels.

    `patches` is (patches_x, patches_y); fewer are used when a patch would be smaller
    than `min_patch_pixels` binned pixels, none when the movie is too small for 2 x 2.
    """
    n, height, width = binned.shape
    global_shifts = align_stack(binned, bfactor_pixels=bfactor_pixels, iterations=iterations)
    coefficients = np.zeros((n, 2, N_FIELD_TERMS))
    coefficients[:, :, 0] = global_shifts * binning
    patches_x = min(patches[0], width // min_patch_pixels)
    patches_y = min(patches[1], height // min_patch_pixels)
    if patches_x * patches_y < 4 or n < 3:
        return MotionModel(global_shifts * binning, coefficients, None, (0, 0))
    aligned = shift_frames(binned, global_shifts)
    patch_w, patch_h = width // patches_x, height // patches_y
    local = np.zeros((n, patches_y, patches_x, 2))
    centres_u = np.zeros((patches_y, patches_x))
    centres_v = np.zeros((patches_y, patches_x))
    for py in range(patches_y):
        for px in range(patches_x):
            y0, x0 = py * patch_h, px * patch_w
            stack = aligned[:, y0 : y0 + patch_h, x0 : x0 + patch_w]
            residual = align_stack(
                stack,
                bfactor_pixels=bfactor_pixels,
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


def accumulated_motion(shifts: np.ndarray) -> np.ndarray:
    """Frame-to-frame displacement lengths (n - 1,) of a (n, 2) trajectory."""
    return np.asarray(np.hypot(*np.diff(shifts, axis=0).T))
