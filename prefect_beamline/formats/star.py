"""RELION STAR tables of motion-corrected micrographs and their CTF (starfile).

The same columns RELION 4/5's MotionCorr and CtfFind jobs write
(`corrected_micrographs.star`, `micrographs_ctf.star`): an optics table and a
micrographs table. Each micrograph row names its motion metadata STAR
(`rlnMicrographMetadata`: the movie, its dose and per-frame shifts, which Bayesian
polishing reads) and, once fitted, its CTF diagnostic power spectrum as an MRC
(`rlnCtfImage`, `<name>.ctf:mrc`, as CTFFIND writes it).

Per-movie flow runs of one session add their row to the session's table
concurrently, so `upsert_rows` holds an exclusive file lock while it reads,
replaces the movie's row and atomically rewrites the file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import starfile

MICROGRAPH_KEY = "rlnMicrographName"
OPTICS_GROUP = 1  # the one optics group of a session's tables (RELION numbers from 1)


@dataclass(frozen=True)
class Optics:
    """The optics group every micrograph of a session shares (RELION `data_optics`)."""

    pixel_size_angstrom: float
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float
    group_name: str = "opticsGroup1"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "rlnOpticsGroupName": self.group_name,
                    "rlnOpticsGroup": OPTICS_GROUP,
                    "rlnMicrographOriginalPixelSize": self.pixel_size_angstrom,
                    "rlnVoltage": self.voltage_kv,
                    "rlnSphericalAberration": self.cs_mm,
                    "rlnAmplitudeContrast": self.amplitude_contrast,
                    "rlnMicrographPixelSize": self.pixel_size_angstrom,
                }
            ]
        )


def _micrograph_row(micrograph: str, **columns: Any) -> dict[str, Any]:
    """A micrographs-table row: the micrograph, its optics group, then `columns`."""
    return {MICROGRAPH_KEY: micrograph, "rlnOpticsGroup": OPTICS_GROUP, **columns}


def motion_row(
    micrograph: str,
    total_motion: float,
    early_motion: float,
    late_motion: float,
    metadata: str | None = None,
) -> dict[str, Any]:
    """A `corrected_micrographs.star` row (motion in Å, as RELION accumulates it)."""
    extra = {} if metadata is None else {"rlnMicrographMetadata": metadata}
    return _micrograph_row(
        micrograph,
        **extra,
        rlnAccumMotionTotal=total_motion,
        rlnAccumMotionEarly=early_motion,
        rlnAccumMotionLate=late_motion,
    )


def ctf_row(
    micrograph: str,
    power_spectrum: str,
    defocus_u: float,
    defocus_v: float,
    angle_deg: float,
    figure_of_merit: float,
    max_resolution: float,
    metadata: str | None = None,
) -> dict[str, Any]:
    """A `micrographs_ctf.star` row (defocus in Å, angle in degrees, resolution in Å).

    `power_spectrum` is the diagnostic MRC; RELION wants it as `<file>:mrc`."""
    extra = {} if metadata is None else {"rlnMicrographMetadata": metadata}
    image = power_spectrum if power_spectrum.endswith(":mrc") else f"{power_spectrum}:mrc"
    return _micrograph_row(
        micrograph,
        **extra,
        rlnCtfImage=image,
        rlnDefocusU=defocus_u,
        rlnDefocusV=defocus_v,
        rlnCtfAstigmatism=abs(defocus_u - defocus_v),
        rlnDefocusAngle=angle_deg,
        rlnCtfFigureOfMerit=figure_of_merit,
        rlnCtfMaxResolution=max_resolution,
    )


@dataclass(frozen=True)
class MovieMetadata:
    """What RELION's motion-correction metadata STAR says of one movie (`data_general`
    and `data_global_shift`): read by Bayesian polishing to re-extract particles.

    Shifts are the whole-frame shifts (x, y) applied to align each frame, in unbinned
    pixels; no local motion model is written (rlnMotionModelVersion 0).
    """

    movie: str
    shape: tuple[int, int]  # (ny, nx) of a frame, pixels
    n_frames: int
    pixel_size_angstrom: float
    dose_per_frame: float
    pre_exposure: float
    voltage_kv: float
    shifts_px: Sequence[tuple[float, float]]
    gain_reference: str | None = None
    binning: float = 1.0
    eer_upsampling: int | None = None
    eer_grouping: int | None = None

    def tables(self) -> dict[str, Any]:
        general: dict[str, Any] = {
            "rlnImageSizeX": self.shape[1],
            "rlnImageSizeY": self.shape[0],
            "rlnImageSizeZ": self.n_frames,
            "rlnMicrographMovieName": self.movie,
            "rlnMicrographBinning": self.binning,
            "rlnMicrographOriginalPixelSize": self.pixel_size_angstrom,
            "rlnMicrographDoseRate": self.dose_per_frame,
            "rlnMicrographPreExposure": self.pre_exposure,
            "rlnVoltage": self.voltage_kv,
            "rlnMicrographStartFrame": 1,
            "rlnMotionModelVersion": 0,
        }
        if self.gain_reference is not None:
            general["rlnMicrographGainName"] = self.gain_reference
        if self.eer_upsampling is not None:
            general["rlnEERUpsampling"] = self.eer_upsampling
            general["rlnEERGrouping"] = self.eer_grouping
        shifts = pd.DataFrame(
            {
                "rlnMicrographFrameNumber": range(1, len(self.shifts_px) + 1),
                "rlnMicrographShiftX": [float(x) for x, _ in self.shifts_px],
                "rlnMicrographShiftY": [float(y) for _, y in self.shifts_px],
            }
        )
        return {"general": general, "global_shift": shifts}


def write_movie_metadata(path: Path, metadata: MovieMetadata) -> Path:
    """One movie's motion metadata STAR (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    starfile.write(metadata.tables(), partial, overwrite=True)
    partial.replace(path)
    return path


def write_table(path: Path, optics: Optics, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write an optics + micrographs STAR file (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    starfile.write(
        {"optics": optics.table(), "micrographs": pd.DataFrame(list(rows))},
        partial,
        overwrite=True,
    )
    partial.replace(path)
    return path


def read_micrographs(path: Path) -> pd.DataFrame:
    """The micrographs table of a STAR file (empty when the file does not exist)."""
    if not path.exists():
        return pd.DataFrame()
    tables = starfile.read(path, always_dict=True)
    return tables.get("micrographs", pd.DataFrame())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upsert_rows(path: Path, optics: Optics, rows: Sequence[Mapping[str, Any]]) -> int:
    """Add or replace rows (by micrograph name) of a shared STAR file; return its row count."""
    with _locked(path):
        table = read_micrographs(path)
        existing = table.to_dict("records") if len(table) else []
        by_name: dict[str, dict[str, Any]] = {str(r[MICROGRAPH_KEY]): dict(r) for r in existing}
        for row in rows:
            by_name[str(row[MICROGRAPH_KEY])] = dict(row)
        ordered = [by_name[name] for name in sorted(by_name)]
        write_table(path, optics, ordered)
        return len(ordered)
