"""Contrast transfer function: the model, and its fit to a micrograph's Thon rings.

Conventions (CTFFIND4 / RELION): defocus in Å, positive underfocus; defocus U along the
direction at `angle_deg` from the x axis (image columns), V perpendicular to it; the
CTF is -[sqrt(1-A²) sin χ + A cos χ] with χ(k) = π λ Δf(θ) k² - π/2 Cs λ³ k⁴.

The fit works on the average power spectrum of square tiles of the micrograph (rfft
half-plane layout), background subtracted with a box filter, in a resolution band:
1. a 1-D search of the mean defocus against the radial average;
2. per angular sector, the defocus near it, fitted to Δf(θ) = a + b cos 2θ + c sin 2θ
   for the astigmatism and its angle;
3. a 2-D refinement of (U, V, angle) maximising the correlation of the model CTF²
   with the spectrum;
4. the fit resolution: the highest frequency up to which the model still correlates
   with the equi-phase (astigmatism-corrected) radial average, ring by ring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import DTypeLike
from scipy import ndimage, optimize

from prefect_beamline.ext.powerspec import elliptical_average, sector_average


@dataclass(frozen=True)
class Microscope:
    """What the CTF depends on besides defocus."""

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1

    @property
    def wavelength_angstrom(self) -> float:
        """Relativistic electron wavelength."""
        volts = self.voltage_kv * 1e3
        return 12.2643247 / math.sqrt(volts * (1.0 + 0.978466e-6 * volts))


@dataclass(frozen=True)
class CTFParameters:
    """Defocus U/V (Å), angle of U from the x axis (degrees, 0-180), U >= V."""

    defocus_u: float
    defocus_v: float
    angle_deg: float

    @property
    def mean_defocus(self) -> float:
        return 0.5 * (self.defocus_u + self.defocus_v)

    @property
    def astigmatism(self) -> float:
        return abs(self.defocus_u - self.defocus_v)

    def normalised(self) -> CTFParameters:
        """U >= V, angle in [0, 180)."""
        u, v, angle = self.defocus_u, self.defocus_v, self.angle_deg
        if v > u:
            u, v, angle = v, u, angle + 90.0
        return CTFParameters(u, v, angle % 180.0)


@dataclass(frozen=True)
class CTFFit:
    """A fitted CTF: parameters, correlation with the spectrum, fit resolution (Å)."""

    parameters: CTFParameters
    cc: float
    fit_resolution_angstrom: float


def frequency_grid(
    shape: tuple[int, int], pixel_size: float = 1.0, dtype: DTypeLike = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """(kx, ky) of the rfft2 half-plane of an image of `shape`, as a row and a column that
    broadcast: in 1/Å for pixels of `pixel_size` Å, in cycles per pixel by default."""
    ny, nx = shape
    ky = scipy.fft.fftfreq(ny, d=pixel_size).astype(dtype)[:, None]
    kx = scipy.fft.rfftfreq(nx, d=pixel_size).astype(dtype)[None, :]
    return kx, ky


def ctf_values(
    kx: np.ndarray, ky: np.ndarray, ctf: CTFParameters, microscope: Microscope
) -> np.ndarray:
    """The CTF at spatial frequencies (kx, ky) in 1/Å."""
    wavelength = microscope.wavelength_angstrom
    cs = microscope.cs_mm * 1e7
    k2 = kx * kx + ky * ky
    angle = np.arctan2(ky, kx)
    defocus = ctf.mean_defocus + 0.5 * (ctf.defocus_u - ctf.defocus_v) * np.cos(
        2.0 * (angle - np.deg2rad(ctf.angle_deg))
    )
    chi = np.pi * wavelength * defocus * k2 - 0.5 * np.pi * cs * wavelength**3 * k2 * k2
    a = microscope.amplitude_contrast
    return np.asarray(-(math.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi)))


def tile_power_spectrum(image: np.ndarray, tile: int) -> np.ndarray:
    """Mean power spectrum (rfft half-plane, float32) of tiles of the image.

    Tiles overlap by half only when the image holds fewer than 16 whole tiles: a 4k
    micrograph gives 64 tiles of 512², plenty to average.
    """
    ny, nx = image.shape
    tile = min(tile, ny, nx)
    step = tile if (ny // tile) * (nx // tile) >= 16 else tile // 2
    starts_y = range(0, ny - tile + 1, step)
    starts_x = range(0, nx - tile + 1, step)
    total = np.zeros((tile, tile // 2 + 1), dtype=np.float64)
    count = 0
    for y0 in starts_y:
        row = np.stack([image[y0 : y0 + tile, x0 : x0 + tile] for x0 in starts_x])
        row = row.astype(np.float32)
        row -= row.mean(axis=(1, 2), keepdims=True)
        spectra = scipy.fft.rfft2(row, workers=-1)
        total += (spectra.real**2 + spectra.imag**2).sum(axis=0)
        count += row.shape[0]
    return (total / max(count, 1)).astype(np.float32)


def subtract_background(spectrum: np.ndarray, box: int) -> np.ndarray:
    """sqrt(power) minus its box-filtered self (the smooth background): rings remain."""
    full = np.sqrt(np.fft.fftshift(full_plane(spectrum), axes=(0, 1)))
    background = ndimage.uniform_filter(full, size=box, mode="nearest")
    flat = np.fft.ifftshift(full - background, axes=(0, 1))
    return np.ascontiguousarray(flat[:, : spectrum.shape[1]], dtype=np.float32)


def full_plane(half: np.ndarray) -> np.ndarray:
    """The full (tile, tile) power spectrum from its rfft half plane (Hermitian)."""
    n = half.shape[0]
    full = np.empty((n, n), dtype=np.float64)
    full[:, : half.shape[1]] = half
    rows = (-np.arange(n)) % n
    mirrored = n - np.arange(half.shape[1], n)  # column c holds half[-row, n - c]
    full[:, half.shape[1] :] = half[rows[:, None], mirrored[None, :]]
    return full


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _ctf2_1d(k: np.ndarray, defocus: float, microscope: Microscope) -> np.ndarray:
    return ctf_values(k, np.zeros_like(k), CTFParameters(defocus, defocus, 0.0), microscope) ** 2


def fit_ctf(
    micrograph: np.ndarray,
    pixel_size: float,
    microscope: Microscope,
    *,
    tile: int = 512,
    min_resolution: float = 30.0,
    max_resolution: float = 4.0,
    min_defocus: float = 3000.0,
    max_defocus: float = 50000.0,
    n_sectors: int = 12,
) -> tuple[CTFFit, np.ndarray]:
    """Fit the CTF to a micrograph; returns the fit and the background-subtracted spectrum."""
    power = tile_power_spectrum(micrograph, tile)
    n = power.shape[0]
    flat = subtract_background(power, box=max(5, n // 24))
    k_to_bin = n * pixel_size  # spectrum pixels per 1/Å
    k_low = 1.0 / min_resolution
    k_high = min(1.0 / max_resolution, 0.5 / pixel_size * 0.96)
    n_bins = n // 2 + 1
    k_bins = np.arange(n_bins) / k_to_bin
    band = (k_bins >= k_low) & (k_bins <= k_high)

    # 1. mean defocus from the radial average
    radial = _profile(flat, 1.0, 0.0, 1.0, n_bins)
    defoci = np.arange(min_defocus, max_defocus, 50.0)
    scores = [_pearson(radial[band], _ctf2_1d(k_bins[band], d, microscope)) for d in defoci]
    mean_defocus = float(defoci[int(np.argmax(scores))])

    # 2. astigmatism from per-sector defocus
    sums, counts = sector_average(flat, n_sectors, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        sectors = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    thetas = -0.5 * np.pi + (np.arange(n_sectors) + 0.5) * np.pi / n_sectors
    local = np.arange(0.7 * mean_defocus, 1.3 * mean_defocus, 25.0)
    sector_defocus = []
    for profile in sectors:
        s = [_pearson(profile[band], _ctf2_1d(k_bins[band], d, microscope)) for d in local]
        sector_defocus.append(local[int(np.argmax(s))])
    design = np.stack([np.ones(n_sectors), np.cos(2 * thetas), np.sin(2 * thetas)], axis=1)
    a, b, c = np.linalg.lstsq(design, np.asarray(sector_defocus), rcond=None)[0]
    half_astig = math.hypot(b, c)
    start = CTFParameters(a + half_astig, a - half_astig, math.degrees(0.5 * math.atan2(c, b)))

    # 3. 2-D refinement
    kx, ky = frequency_grid((n, n), pixel_size)
    k = np.sqrt(kx * kx + ky * ky)
    mask = (k >= k_low) & (k <= k_high)
    kx_band = np.broadcast_to(kx, k.shape)[mask]
    ky_band = np.broadcast_to(ky, k.shape)[mask]
    data = flat[mask].astype(np.float64)

    def negative_cc(x: np.ndarray) -> float:
        model = ctf_values(kx_band, ky_band, CTFParameters(x[0], x[1], x[2]), microscope) ** 2
        return -_pearson(data, model)

    result = optimize.minimize(
        negative_cc,
        np.array([start.defocus_u, start.defocus_v, start.angle_deg]),
        method="Nelder-Mead",
        options={"xatol": 1.0, "fatol": 1e-5, "initial_simplex": _simplex(start)},
    )
    best = CTFParameters(*map(float, result.x)).normalised()
    cc = -float(result.fun)
    resolution = fit_resolution(flat, best, pixel_size, microscope, k_low)
    return CTFFit(best, cc, resolution), flat


def _simplex(start: CTFParameters) -> np.ndarray:
    x0 = np.array([start.defocus_u, start.defocus_v, start.angle_deg])
    step = max(200.0, 0.03 * start.mean_defocus)
    steps = np.array([[0.0, 0.0, 0.0], [step, 0.0, 0.0], [0.0, step, 0.0], [0.0, 0.0, 15.0]])
    return x0[None, :] + steps


def _profile(flat: np.ndarray, a: float, b: float, c: float, n_bins: int) -> np.ndarray:
    sums, counts = elliptical_average(flat, a, b, c, n_bins)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def fit_resolution(
    flat: np.ndarray,
    ctf: CTFParameters,
    pixel_size: float,
    microscope: Microscope,
    k_low: float,
    threshold: float = 0.3,
) -> float:
    """Highest resolution (Å) up to which each pair of Thon rings still fits the model.

    Averages the spectrum along ellipses of equal defocus phase, so astigmatism does not
    blur the rings, and slides a window of two CTF oscillations outwards from `k_low`.
    """
    n = flat.shape[0]
    ratio = (ctf.defocus_u - ctf.defocus_v) / (ctf.defocus_u + ctf.defocus_v)
    phi = math.radians(ctf.angle_deg)
    profile = _profile(
        flat,
        1.0 + ratio * math.cos(2 * phi),
        ratio * math.sin(2 * phi),
        1.0 - ratio * math.cos(2 * phi),
        n // 2 + 1,
    )
    k = np.arange(profile.size) / (n * pixel_size)
    model = _ctf2_1d(k, ctf.mean_defocus, microscope)
    wavelength = microscope.wavelength_angstrom
    # CTF zeros: χ = π λ Δf k² crosses multiples of π (Cs ignored for the window edges).
    ring = np.floor(wavelength * ctf.mean_defocus * k * k)
    best_k = k_low
    for order in range(int(ring[k >= k_low].min(initial=0)), int(ring.max()) - 1):
        window = (ring >= order) & (ring < order + 2) & (k >= k_low)
        if window.sum() < 4:
            break
        if _pearson(profile[window], model[window]) < threshold:
            break
        best_k = float(k[window].max())
    return 1.0 / best_k
