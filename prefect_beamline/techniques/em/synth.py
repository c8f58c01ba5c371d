"""A synthetic cryo-EM session with known truth: movies, gain reference, drift, CTF.

Each movie images a random specimen (particles on a thin amorphous film: white-ish
texture, so Thon rings show at every frequency) through a known CTF (defocus U/V,
astigmatism angle, voltage, Cs, amplitude contrast). Frame f shows it displaced by a
global drift (fast at first, then settling, as beam-induced motion does) plus a smooth
local field (a slow rotation about the centre, zero on average), with Poisson-limited
counts at the given dose, recorded by a detector whose per-pixel sensitivity the gain
reference undoes (corrected = raw x gain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage

from prefect_beamline.formats.mrc import write_mrc, write_tiff_movie
from prefect_beamline.techniques.em.ctf import CTFParameters, Microscope, ctf_values, frequency_grid


@dataclass(frozen=True)
class SyntheticMovie:
    """One movie and its truth: shifts (n_frames, 2) of the frame centre, CTF."""

    path: Path
    shifts: np.ndarray
    ctf: CTFParameters
    local_motion_px: float


@dataclass(frozen=True)
class SyntheticSession:
    """A session folder of movies sharing a gain reference and optics."""

    directory: Path
    gain_reference: Path
    movies: list[SyntheticMovie]
    pixel_size_angstrom: float
    dose_per_frame: float
    microscope: Microscope = field(default_factory=Microscope)

    @property
    def movie_paths(self) -> list[Path]:
        return [movie.path for movie in self.movies]


def specimen(shape: tuple[int, int], rng: np.random.Generator, pixel_size: float) -> np.ndarray:
    """A projected specimen: blobs of ~100-200 Å plus a film texture, zero mean, unit std."""
    ny, nx = shape
    texture = rng.standard_normal(shape)
    blobs = np.zeros(shape)
    n_particles = max(4, int(ny * nx * pixel_size**2 / 150.0**2 * 0.4))
    ys = rng.integers(0, ny, n_particles)
    xs = rng.integers(0, nx, n_particles)
    blobs[ys, xs] = rng.uniform(0.5, 1.5, n_particles)
    blobs = ndimage.gaussian_filter(blobs, sigma=60.0 / pixel_size, mode="wrap")
    blobs *= texture.std() * 4.0 / max(float(blobs.std()), 1e-12)
    image = texture + blobs
    return (image - image.mean()) / image.std()


def imaged(
    object_: np.ndarray, ctf: CTFParameters, microscope: Microscope, pixel_size: float
) -> np.ndarray:
    """The weak-phase image contrast: object filtered by the CTF (unit std)."""
    kx, ky = frequency_grid(object_.shape, pixel_size)
    spectrum = scipy.fft.rfft2(object_) * ctf_values(kx, ky, ctf, microscope)
    image = scipy.fft.irfft2(spectrum, s=object_.shape)
    return np.asarray(image / image.std())


def drift(n_frames: int, total_px: float, rng: np.random.Generator) -> np.ndarray:
    """Global shifts (n_frames, 2) from frame 0: fast early drift that settles, plus jitter."""
    t = np.arange(n_frames, dtype=np.float64)
    direction = rng.uniform(0, 2 * np.pi)
    path = total_px * (1.0 - np.exp(-t / max(n_frames / 3.0, 1.0)))
    shifts = np.stack([path * np.cos(direction), path * np.sin(direction)], axis=1)
    shifts += np.cumsum(rng.normal(0.0, 0.15, (n_frames, 2)), axis=0)
    return shifts - shifts[0]


def render_frame(
    clean: np.ndarray, shift: np.ndarray, local_px: float, fraction: float, order: int
) -> np.ndarray:
    """`clean` displaced by the global shift plus the local field at this time fraction."""
    ny, nx = clean.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    u = xx / nx - 0.5
    v = yy / ny - 0.5
    # Local field: a rotation about the centre growing with time, zero mean.
    dx = shift[0] - 2.0 * local_px * fraction * v
    dy = shift[1] + 2.0 * local_px * fraction * u
    return ndimage.map_coordinates(clean, [yy - dy, xx - dx], order=order, mode="wrap")


def write_em_session(
    directory: Path,
    *,
    n_movies: int = 3,
    n_frames: int = 10,
    shape: tuple[int, int] = (512, 512),
    pixel_size_angstrom: float = 1.2,
    dose_per_frame: float = 1.5,
    contrast: float = 0.4,
    drift_px: float = 8.0,
    local_motion_px: float = 1.0,
    defocus_range: tuple[float, float] = (12000.0, 22000.0),
    astigmatism_range: tuple[float, float] = (600.0, 1500.0),
    movie_format: str = "mrc",
    movie_prefix: str = "FoilHole_1_Data",
    seed: int = 0,
    interpolation_order: int = 3,
    microscope: Microscope | None = None,
) -> SyntheticSession:
    """Write movies (MRC or TIFF, counts as uint16/uint8) and a gain reference (MRC).

    `dose_per_frame` is in electrons per Å²; counts per pixel per frame are that times
    the pixel area.
    """
    microscope = microscope or Microscope()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sensitivity = np.clip(rng.normal(1.0, 0.08, shape), 0.6, 1.4)
    sensitivity *= 1.0 + 0.1 * np.sin(np.arange(shape[1]) / 7.0)[None, :]  # column pattern
    gain_path = write_mrc(
        directory / "gain_reference.mrc", (1.0 / sensitivity).astype(np.float32), 0.0
    )
    counts_per_pixel = dose_per_frame * pixel_size_angstrom**2
    movies = []
    for index in range(n_movies):
        u = rng.uniform(*defocus_range)
        astig = rng.uniform(*astigmatism_range)
        ctf = CTFParameters(u, u - astig, float(rng.uniform(0.0, 180.0)))
        clean = imaged(
            specimen(shape, rng, pixel_size_angstrom), ctf, microscope, pixel_size_angstrom
        )
        expected = counts_per_pixel * np.clip(1.0 + contrast * clean, 0.0, None)
        shifts = drift(n_frames, drift_px, rng)
        frames = np.empty(
            (n_frames, *shape), dtype=np.uint16 if movie_format == "mrc" else np.uint8
        )
        for f in range(n_frames):
            fraction = f / max(n_frames - 1, 1)
            mean = render_frame(expected, shifts[f], local_motion_px, fraction, interpolation_order)
            counts = rng.poisson(np.clip(mean, 0.0, None) * sensitivity)
            frames[f] = np.clip(counts, 0, np.iinfo(frames.dtype).max)
        name = f"{movie_prefix}_{index + 1:04d}"
        if movie_format == "mrc":
            path = write_mrc(directory / f"{name}.mrc", frames, pixel_size_angstrom)
        elif movie_format == "tiff":
            path = write_tiff_movie(directory / f"{name}.tiff", frames)
        else:
            raise ValueError(f"movie_format must be 'mrc' or 'tiff', got {movie_format!r}")
        movies.append(SyntheticMovie(path, shifts, ctf.normalised(), local_motion_px))
    return SyntheticSession(
        directory, gain_path, movies, pixel_size_angstrom, dose_per_frame, microscope
    )


__all__ = [
    "SyntheticMovie",
    "SyntheticSession",
    "write_em_session",
]
