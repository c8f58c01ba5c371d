"""What one chunk of serial frames gives: peaks and hits, a radial profile of every frame,
the chunk's hit rate; and how a collection's chunks sum up. Pure: no Prefect, no files.

`SerialAnalyser` holds what is computed once per detector geometry and mask (the ring
map of the hit finder, the integrator's sparse matrix); `analyse_chunk` is the per-chunk
step the flow runs and that the live path can call on frames as they arrive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefect_beamline.ext.azimint import AzimuthalIntegrator, DetectorGeometry
from prefect_beamline.ext.peakfinder import PeakFinderParameters, PeakTable, RingMap, find_peaks
from prefect_beamline.formats.nxmx import DetectorGeometry as NXmxGeometry


@dataclass(frozen=True)
class SerialSettings:
    """The science settings of one analysis (the flow's parameters, as plain values)."""

    peaks: PeakFinderParameters
    min_peaks: int = 10
    n_bins: int = 1000
    unit: str = "q_nm^-1"
    polarization_factor: float | None = 0.99


@dataclass(frozen=True)
class SerialAnalyser:
    """The per-geometry state of the analysis: built once, used for every chunk."""

    settings: SerialSettings
    ring_map: RingMap
    integrator: AzimuthalIntegrator

    @classmethod
    def build(
        cls, geometry: NXmxGeometry, valid: np.ndarray, settings: SerialSettings
    ) -> SerialAnalyser:
        """From an NXmx collection's geometry and valid-pixel mask."""
        detector = DetectorGeometry(
            shape=geometry.image_shape,
            distance_mm=geometry.detector_distance_mm,
            beam_centre_x_px=geometry.beam_centre_x_px,
            beam_centre_y_px=geometry.beam_centre_y_px,
            pixel_size_x_mm=geometry.pixel_size_x_mm,
            pixel_size_y_mm=geometry.pixel_size_y_mm,
            wavelength_angstrom=geometry.wavelength_angstrom,
        )
        ring_map = RingMap.from_geometry(
            valid, geometry.beam_centre_x_px, geometry.beam_centre_y_px
        )
        integrator = AzimuthalIntegrator.build(
            detector,
            valid,
            settings.n_bins,
            unit=settings.unit,
            polarization_factor=settings.polarization_factor,
        )
        return cls(settings, ring_map, integrator)


@dataclass(frozen=True)
class ChunkResult:
    """Frames first..last (1-based image numbers) of a collection, analysed.

    `n_peaks` per frame (all found), `hit` per frame (n_peaks >= min_peaks); the peak
    table of the hits only (CXI rows); every frame's radial profile; `finished_at`
    (Unix seconds) for the hit rate over time.
    """

    first: int
    last: int
    n_peaks: np.ndarray
    hit: np.ndarray
    hit_peaks: PeakTable
    profiles: np.ndarray
    finished_at: float

    @property
    def n_frames(self) -> int:
        return int(self.hit.size)

    @property
    def n_hits(self) -> int:
        return int(self.hit.sum())

    @property
    def hit_rate(self) -> float:
        return self.n_hits / self.n_frames if self.n_frames else 0.0

    def hit_image_numbers(self) -> np.ndarray:
        return self.first + np.flatnonzero(self.hit)


def analyse_chunk(
    analyser: SerialAnalyser, frames: np.ndarray, first: int, *, n_threads: int = 1
) -> ChunkResult:
    """Peaks, hits and profiles of a chunk of frames (n, ny, nx) whose first is `first`."""
    table = find_peaks(frames, analyser.ring_map, analyser.settings.peaks, n_threads=n_threads)
    profiles = analyser.integrator.integrate(frames, n_threads=n_threads).intensity
    hit = table.n_peaks >= analyser.settings.min_peaks
    rows = np.flatnonzero(hit)
    hit_peaks = PeakTable(
        n_peaks=table.n_peaks[rows],
        x=table.x[rows],
        y=table.y[rows],
        intensity=table.intensity[rows],
        n_pixels=table.n_pixels[rows],
    )
    return ChunkResult(
        first=first,
        last=first + frames.shape[0] - 1,
        n_peaks=table.n_peaks.copy(),
        hit=hit,
        hit_peaks=hit_peaks,
        profiles=profiles.astype(np.float32),
        finished_at=time.time(),
    )


@dataclass(frozen=True)
class ChunkHitRate:
    """The hit rate of one chunk as it finishes: the record the LIMS and the live view
    show (`SSXChunkHitRate` rows)."""

    first_image: int
    last_image: int
    n_frames: int
    n_hits: int
    hit_rate: float
    mean_peaks_per_hit: float | None
    finished_at: float

    @classmethod
    def of(cls, chunk: ChunkResult) -> ChunkHitRate:
        hits = chunk.n_peaks[chunk.hit]
        return cls(
            first_image=chunk.first,
            last_image=chunk.last,
            n_frames=chunk.n_frames,
            n_hits=chunk.n_hits,
            hit_rate=round(chunk.hit_rate, 6),
            mean_peaks_per_hit=float(hits.mean()) if hits.size else None,
            finished_at=chunk.finished_at,
        )


@dataclass(frozen=True)
class SerialSummary:
    """A collection's totals: hit list, hit rate, summed profiles of hits and blanks."""

    first_image: int
    hit: np.ndarray
    n_peaks: np.ndarray
    radial: np.ndarray
    unit: str
    hits_profile: np.ndarray
    blanks_profile: np.ndarray
    chunks: list[ChunkHitRate]

    @property
    def n_frames(self) -> int:
        return int(self.hit.size)

    @property
    def n_hits(self) -> int:
        return int(self.hit.sum())

    @property
    def hit_rate(self) -> float:
        return self.n_hits / self.n_frames if self.n_frames else 0.0

    def hit_image_numbers(self) -> np.ndarray:
        return self.first_image + np.flatnonzero(self.hit)

    def as_dict(self) -> dict[str, object]:
        """The numbers of summary.json and of the completion event."""
        hits = self.n_peaks[self.hit]
        return {
            "n_frames": self.n_frames,
            "n_hits": self.n_hits,
            "hit_rate": round(self.hit_rate, 6),
            "mean_peaks_per_hit": round(float(hits.mean()), 2) if hits.size else None,
            "n_chunks": len(self.chunks),
        }


def summarise(chunks: Sequence[ChunkResult], radial: np.ndarray, unit: str) -> SerialSummary:
    """Join chunks (in any order) into the collection's summary."""
    ordered = sorted(chunks, key=lambda chunk: chunk.first)
    n_peaks = np.concatenate([chunk.n_peaks for chunk in ordered])
    hit = np.concatenate([chunk.hit for chunk in ordered])
    profiles = np.concatenate([chunk.profiles for chunk in ordered]).astype(np.float64)
    return SerialSummary(
        first_image=ordered[0].first if ordered else 1,
        hit=hit,
        n_peaks=n_peaks,
        radial=radial,
        unit=unit,
        hits_profile=profiles[hit].sum(axis=0),
        blanks_profile=profiles[~hit].sum(axis=0),
        chunks=[ChunkHitRate.of(chunk) for chunk in chunks],
    )


def join_chunks(parts: Sequence[ChunkResult]) -> ChunkResult:
    """Consecutive pieces of a chunk (in order) as one chunk."""
    if not parts:
        raise ValueError("join_chunks needs at least one piece")
    tables = [part.hit_peaks for part in parts]
    return ChunkResult(
        first=parts[0].first,
        last=parts[-1].last,
        n_peaks=np.concatenate([part.n_peaks for part in parts]),
        hit=np.concatenate([part.hit for part in parts]),
        hit_peaks=PeakTable(
            n_peaks=np.concatenate([table.n_peaks for table in tables]),
            x=np.concatenate([table.x for table in tables]),
            y=np.concatenate([table.y for table in tables]),
            intensity=np.concatenate([table.intensity for table in tables]),
            n_pixels=np.concatenate([table.n_pixels for table in tables]),
        ),
        profiles=np.concatenate([part.profiles for part in parts]),
        finished_at=max(part.finished_at for part in parts),
    )
