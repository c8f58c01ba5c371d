"""The files one movie's processing leaves, and the record they make.

In the job's folder: the dose-weighted micrograph (MRC), its CTF diagnostic power
spectrum (`<movie>.ctf`, an MRC as CTFFIND writes it) and RELION motion metadata STAR
(`<movie>.star`), its drift and power-spectrum PNGs, the job's own RELION STAR tables
(corrected_micrographs.star, micrographs_ctf.star) and summary.json. In the
session's folder: the same STAR rows, upserted into the session's shared tables,
which RELION reads as the session grows.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_beamline.formats import star
from prefect_beamline.formats.mrc import write_mrc
from prefect_beamline.report import SUMMARY_FILE
from prefect_beamline.techniques.em.ctf import Microscope
from prefect_beamline.techniques.em.movie import MovieResult, MovieSettings
from prefect_beamline.techniques.em.records import CTFResult, EMMovieResult, MotionResult
from prefect_beamline.techniques.em.report import ctf_diagnostic, drift_png, power_spectrum_png
from prefect_beamline.techniques.em.session import CTF_STAR, MOTION_STAR


def write_movie_results(
    movie: str,
    processed: MovieResult,
    settings: MovieSettings,
    folder: Path,
    gain_reference: str | None = None,
) -> EMMovieResult:
    """Micrograph, CTF diagnostic, motion metadata and plots of one processed movie in
    `folder`; the movie's record."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(movie).stem
    pixel_size = processed.pixel_size_angstrom
    micrograph = write_mrc(folder / f"{stem}.mrc", processed.micrograph, pixel_size)
    spectrum = folder / f"{stem}_PS.png"
    spectrum.write_bytes(
        power_spectrum_png(processed.spectrum, processed.ctf, pixel_size, settings.microscope, stem)
    )
    diagnostic = ctf_diagnostic(processed.spectrum, processed.ctf, pixel_size, settings.microscope)
    ctf_image = write_mrc(folder / f"{stem}.ctf", diagnostic, pixel_size)
    metadata = star.write_movie_metadata(
        folder / f"{stem}.star", movie_metadata(movie, processed, settings, gain_reference)
    )
    drift_plot = folder / f"{stem}_drift.png"
    drift_plot.write_bytes(drift_png(processed.motion.global_shifts, pixel_size, f"{stem} drift"))
    total, early, late = processed.motion_totals(settings.dose_per_frame, settings.pre_exposure)
    fit = processed.ctf.parameters
    return EMMovieResult(
        movie_path=movie,
        motion=MotionResult(
            drift=[(float(x), float(y)) for x, y in processed.motion.global_shifts],
            total_motion=total,
            dose_per_frame=settings.dose_per_frame,
            dose_weighted=settings.dose_weighting,
            patches=processed.motion.patches,
            micrograph_path=str(micrograph),
            drift_plot_path=str(drift_plot),
            power_spectrum_path=str(spectrum),
            early_motion=early,
            late_motion=late,
            metadata_path=str(metadata),
        ),
        ctf=CTFResult(
            defocus_u=fit.defocus_u,
            defocus_v=fit.defocus_v,
            angle_deg=fit.angle_deg,
            fit_resolution=processed.ctf.fit_resolution_angstrom,
            cc=processed.ctf.cc,
            amplitude_contrast=settings.microscope.amplitude_contrast,
            box_size=settings.ctf_tile,
            min_resolution=settings.ctf_min_resolution,
            max_resolution=settings.ctf_max_resolution,
            min_defocus=settings.min_defocus,
            max_defocus=settings.max_defocus,
            power_spectrum_path=str(spectrum),
            ctf_image_path=str(ctf_image),
        ),
        pixel_size_angstrom=pixel_size,
        timings={step: round(seconds, 3) for step, seconds in processed.wall_seconds.items()},
    )


def movie_metadata(
    movie: str, processed: MovieResult, settings: MovieSettings, gain_reference: str | None
) -> star.MovieMetadata:
    """RELION's motion metadata of one movie (EER: its rendering, as RELION records it)."""
    eer = Path(movie).suffix.lower() == ".eer"
    return star.MovieMetadata(
        movie=movie,
        shape=processed.shape,
        n_frames=processed.n_frames,
        pixel_size_angstrom=processed.pixel_size_angstrom,
        dose_per_frame=settings.dose_per_frame,
        pre_exposure=settings.pre_exposure,
        voltage_kv=settings.microscope.voltage_kv,
        shifts_px=[(float(x), float(y)) for x, y in processed.motion.global_shifts],
        gain_reference=gain_reference,
        eer_upsampling=settings.eer.upsampling if eer else None,
        eer_grouping=settings.eer.frames_per_group if eer else None,
    )


def star_rows(result: EMMovieResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """The movie's row of corrected_micrographs.star and of micrographs_ctf.star."""
    motion, ctf = result.motion, result.ctf
    if (
        ctf is None
        or ctf.ctf_image_path is None
        or motion.early_motion is None
        or motion.late_motion is None
    ):
        raise ValueError(
            f"{result.movie_path}: STAR rows need the CTF fit, its diagnostic spectrum and "
            "the early/late motion of the analysis (a result read back from the LIMS has "
            "none of them)"
        )
    motion_row = star.motion_row(
        motion.micrograph_path,
        motion.total_motion,
        motion.early_motion,
        motion.late_motion,
        metadata=motion.metadata_path,
    )
    ctf_row = star.ctf_row(
        motion.micrograph_path,
        ctf.ctf_image_path,
        ctf.defocus_u,
        ctf.defocus_v,
        ctf.angle_deg,
        ctf.cc,
        ctf.fit_resolution,
        metadata=motion.metadata_path,
    )
    return motion_row, ctf_row


def write_tables(
    result: EMMovieResult, microscope: Microscope, results_dir: Path, session_dir: Path
) -> list[tuple[Path, str]]:
    """The movie's STAR rows (job's tables, session's shared tables) and summary.json;
    the job's result files (path, ISPyB fileType), most important first."""
    if result.pixel_size_angstrom is None:
        raise ValueError(f"{result.movie_path}: STAR optics need the movie's pixel size")
    optics = star.Optics(
        pixel_size_angstrom=result.pixel_size_angstrom,
        voltage_kv=microscope.voltage_kv,
        cs_mm=microscope.cs_mm,
        amplitude_contrast=microscope.amplitude_contrast,
    )
    motion_row, ctf_row = star_rows(result)
    own_motion = star.write_table(results_dir / MOTION_STAR, optics, [motion_row])
    own_ctf = star.write_table(results_dir / CTF_STAR, optics, [ctf_row])
    star.upsert_rows(session_dir / MOTION_STAR, optics, [motion_row])
    star.upsert_rows(session_dir / CTF_STAR, optics, [ctf_row])
    summary = results_dir / SUMMARY_FILE
    summary.write_text(json.dumps(asdict(result), indent=2))
    motion = result.motion
    relion_inputs = [motion.metadata_path, result.ctf.ctf_image_path if result.ctf else None]
    return [
        (Path(motion.micrograph_path), "Result"),
        *[(Path(path), "Result") for path in relion_inputs if path],
        (own_ctf, "Result"),
        (own_motion, "Result"),
        (summary, "Result"),
        (Path(motion.power_spectrum_path), "Graph"),
        (Path(motion.drift_plot_path), "Graph"),
    ]
