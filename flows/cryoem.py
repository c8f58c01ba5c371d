"""Cryo-EM on the fly: each movie to a motion-corrected, dose-weighted micrograph and its CTF.

`process_em_movie` runs once per movie, started by the DAQ's (or `prefect-beamline
watch`'s) `images_ready` event: gain correction -> global and patch motion -> dose-weighted
sum -> CTF fit -> micrograph MRC, power-spectrum and drift PNGs, STAR rows -> LIMS rows
(Movie, MotionCorrection + drift, CTF) -> artifacts -> completion event. Run without a
movie (a rerun from the CLI or the UI naming only the collection) it reprocesses every
movie of the session, one flow run per movie, with the parameters given.

`em_session_summary` runs on the session's `finished` event: once the movie runs have
finished, the session's defocus, drift and fit-resolution statistics.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from prefect_beamline.flows.common import (
    JobRecord,
    attach_result_files,
    failure_recorded,
    finish_processing_job,
    infrastructure_retries,
    load_collection,
    merge_parameters,
    open_lims,
    publish_processing_event,
    record_processing_job,
)
from pydantic import BaseModel, ConfigDict, Field

from prefect_beamline.analysis.ctf import Microscope
from prefect_beamline.analysis.em import MovieSettings, process_movie
from prefect_beamline.events import CollectionEvent
from prefect_beamline.formats import star
from prefect_beamline.formats.mrc import write_mrc
from prefect_beamline.lims import CollectionDescription, CTFResult, EMMovieResult, MotionResult

MOVIE_RECIPE = "em-movie"
SUMMARY_RECIPE = "em-session-summary"
MOVIE_FLOW = "em-motioncor-ctf"


class EMParameters(BaseModel):
    """Motion correction and CTF settings; the Prefect UI shows these as a form."""

    model_config = ConfigDict(extra="forbid")

    pixel_size_angstrom: float | None = Field(
        None, gt=0, description="Pixel size of the movie, Å; empty: from the MRC header"
    )
    dose_per_frame: float = Field(1.0, gt=0, description="Exposure per frame, e/Å²")
    pre_exposure: float = Field(0.0, ge=0, description="Exposure before the first frame, e/Å²")
    voltage_kv: float = Field(300.0, gt=0, description="Acceleration voltage, kV")
    cs_mm: float = Field(2.7, ge=0, description="Spherical aberration, mm")
    amplitude_contrast: float = Field(0.1, ge=0, lt=1, description="Amplitude contrast (0-1)")
    gain_reference: str | None = Field(
        None, description="Gain reference MRC (multiplied into the raw frames); empty: none"
    )
    patches_x: int = Field(5, ge=1, le=20, description="Patches across for local motion")
    patches_y: int = Field(5, ge=1, le=20, description="Patches down for local motion")
    alignment_size: int = Field(
        1024,
        ge=128,
        le=8192,
        description="Frames are binned to at most this size (pixels) for motion estimation",
    )
    bfactor: float = Field(
        500.0, ge=0, description="B-factor of the global alignment's low-pass filter, Å²"
    )
    patch_bfactor: float = Field(
        150.0, ge=0, description="B-factor of the patch alignment's low-pass filter, Å²"
    )
    dose_weighting: bool = Field(True, description="Weight frames by exposure (Grant 2015)")
    dose_groups: int = Field(
        5, ge=1, le=100, description="Frame groups dose-weighted together (more: exacter, slower)"
    )
    ctf_tile: int = Field(512, ge=64, le=2048, description="Power-spectrum tile size, pixels")
    ctf_min_resolution: float = Field(30.0, gt=0, description="Lowest resolution fitted, Å")
    ctf_max_resolution: float = Field(4.0, gt=0, description="Highest resolution fitted, Å")
    min_defocus: float = Field(3000.0, gt=0, description="Defocus search from, Å")
    max_defocus: float = Field(50000.0, gt=0, description="Defocus search to, Å")
    threads: int = Field(0, ge=0, le=256, description="Kernel threads; 0: all cores")

    def settings(self) -> MovieSettings:
        return MovieSettings(
            pixel_size_angstrom=self.pixel_size_angstrom,
            dose_per_frame=self.dose_per_frame,
            pre_exposure=self.pre_exposure,
            microscope=Microscope(self.voltage_kv, self.cs_mm, self.amplitude_contrast),
            patches=(self.patches_x, self.patches_y),
            alignment_size=self.alignment_size,
            bfactor_angstrom2=self.bfactor,
            patch_bfactor_angstrom2=self.patch_bfactor,
            dose_groups=self.dose_groups,
            dose_weighting=self.dose_weighting,
            ctf_tile=self.ctf_tile,
            ctf_min_resolution=self.ctf_min_resolution,
            ctf_max_resolution=self.ctf_max_resolution,
            min_defocus=self.min_defocus,
            max_defocus=self.max_defocus,
            n_threads=self.threads,
        )


def effective_parameters(
    announced: CollectionEvent | None, chosen: EMParameters | None
) -> EMParameters:
    """DAQ-announced overrides, then the ones chosen for this run (UI, CLI) on top."""
    return merge_parameters(EMParameters, announced, chosen)


@dataclass(frozen=True)
class MovieOutcome:
    """What one movie gave, small enough to pass between tasks."""

    movie: str
    n_frames: int
    shape: tuple[int, int]
    pixel_size_angstrom: float
    shifts: list[tuple[float, float]]
    total_motion: float
    early_motion: float
    late_motion: float
    patches: tuple[int, int]
    defocus_u: float
    defocus_v: float
    astigmatism: float
    angle_deg: float
    fit_resolution: float
    cc: float
    micrograph: str
    power_spectrum: str
    drift_plot: str
    timings: dict[str, float]


def session_folder(movie: str | Path, collection_id: int) -> Path:
    """`<movie folder>/processing/em/dc<id>`: the session's shared STAR tables and summary."""
    return Path(movie).parent / "processing" / "em" / f"dc{collection_id}"


@task(**infrastructure_retries())
def record_movie(collection_id: int, movie: str, lims_block: str | None) -> int:
    """The Movie row (before processing, so a failed movie is still listed)."""
    return open_lims(lims_block).record_movie(collection_id, movie)


@task(task_run_name="motioncor-ctf-{movie_name}")
def correct_movie(
    movie: str, movie_name: str, parameters: EMParameters, results_dir: Path
) -> MovieOutcome:
    """Motion correction, dose weighting and CTF fit; writes micrograph and plots."""
    from prefect_beamline.emplots import drift_png, power_spectrum_png

    settings = parameters.settings()
    result = process_movie(movie, parameters.gain_reference, settings)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(movie).stem
    micrograph = write_mrc(
        results_dir / f"{stem}.mrc", result.micrograph, result.pixel_size_angstrom
    )
    ctf = result.ctf.parameters
    spectrum_png = results_dir / f"{stem}_PS.png"
    spectrum_png.write_bytes(
        power_spectrum_png(
            result.spectrum,
            ctf,
            result.pixel_size_angstrom,
            settings.microscope,
            f"{stem}: {ctf.defocus_u / 1e4:.3f}/{ctf.defocus_v / 1e4:.3f} µm, "
            f"{ctf.angle_deg:.0f}°, fit {result.ctf.fit_resolution_angstrom:.1f} Å",
        )
    )
    drift_plot = results_dir / f"{stem}_drift.png"
    drift_plot.write_bytes(
        drift_png(result.motion.global_shifts, result.pixel_size_angstrom, f"{stem} drift")
    )
    total, early, late = result.motion_totals(settings.dose_per_frame, settings.pre_exposure)
    return MovieOutcome(
        movie=movie,
        n_frames=result.n_frames,
        shape=result.shape,
        pixel_size_angstrom=result.pixel_size_angstrom,
        shifts=[(float(x), float(y)) for x, y in result.motion.global_shifts],
        total_motion=total,
        early_motion=early,
        late_motion=late,
        patches=result.motion.patches,
        defocus_u=ctf.defocus_u,
        defocus_v=ctf.defocus_v,
        astigmatism=ctf.astigmatism,
        angle_deg=ctf.angle_deg,
        fit_resolution=result.ctf.fit_resolution_angstrom,
        cc=result.ctf.cc,
        micrograph=str(micrograph),
        power_spectrum=str(spectrum_png),
        drift_plot=str(drift_plot),
        timings={step: round(seconds, 3) for step, seconds in result.wall_seconds.items()},
    )


def _optics(outcome: MovieOutcome, parameters: EMParameters) -> star.Optics:
    return star.Optics(
        pixel_size_angstrom=outcome.pixel_size_angstrom,
        voltage_kv=parameters.voltage_kv,
        cs_mm=parameters.cs_mm,
        amplitude_contrast=parameters.amplitude_contrast,
    )


def _star_rows(outcome: MovieOutcome) -> tuple[dict[str, Any], dict[str, Any]]:
    motion = star.motion_row(
        outcome.micrograph, outcome.total_motion, outcome.early_motion, outcome.late_motion
    )
    ctf = star.ctf_row(
        outcome.micrograph,
        outcome.power_spectrum,
        outcome.defocus_u,
        outcome.defocus_v,
        outcome.angle_deg,
        outcome.cc,
        outcome.fit_resolution,
    )
    return motion, ctf


@task(**infrastructure_retries())
def write_star_rows(
    job: JobRecord, outcome: MovieOutcome, parameters: EMParameters
) -> list[tuple[Path, str]]:
    """The movie's rows: in the job's own STAR files and in the session's shared ones."""
    optics = _optics(outcome, parameters)
    motion, ctf = _star_rows(outcome)
    own_motion = star.write_table(job.results_dir / "corrected_micrographs.star", optics, [motion])
    own_ctf = star.write_table(job.results_dir / "micrographs_ctf.star", optics, [ctf])
    shared = session_folder(outcome.movie, job.data_collection_id)
    star.upsert_rows(shared / "corrected_micrographs.star", optics, [motion])
    star.upsert_rows(shared / "micrographs_ctf.star", optics, [ctf])
    (job.results_dir / "summary.json").write_text(json.dumps(asdict(outcome), indent=2))
    return [
        (Path(outcome.micrograph), "Result"),
        (own_ctf, "Result"),
        (own_motion, "Result"),
        (job.results_dir / "summary.json", "Result"),
        (Path(outcome.power_spectrum), "Graph"),
        (Path(outcome.drift_plot), "Graph"),
    ]


@task(**infrastructure_retries())
def record_em_results(
    job: JobRecord,
    movie_id: int,
    outcome: MovieOutcome,
    parameters: EMParameters,
    lims_block: str | None,
) -> tuple[int, int]:
    """MotionCorrection (+ per-frame drift) and CTF rows; (motionCorrectionId, ctfId)."""
    lims = open_lims(lims_block)
    movie_number = next(
        (
            m.movie_number
            for m in lims.movies_for_collection(job.data_collection_id)
            if m.movie_id == movie_id
        ),
        0,
    )
    lims.record_movie(
        job.data_collection_id,
        outcome.movie,
        n_frames=outcome.n_frames,
        dose_per_frame=parameters.dose_per_frame,
    )
    steps = max(outcome.n_frames - 1, 1)
    mc_id = lims.record_motion_correction(
        job.program_id,
        job.data_collection_id,
        movie_id,
        MotionResult(
            movie_number=movie_number,
            drift=outcome.shifts,
            dose_per_frame=parameters.dose_per_frame,
            dose_weighted=parameters.dose_weighting,
            total_motion=outcome.total_motion,
            average_motion_per_frame=outcome.total_motion / steps,
            micrograph_path=outcome.micrograph,
            drift_plot_path=outcome.drift_plot,
            power_spectrum_path=outcome.power_spectrum,
            patches=outcome.patches,
        ),
    )
    ctf_id = lims.record_ctf(
        job.program_id,
        mc_id,
        CTFResult(
            defocus_u=outcome.defocus_u,
            defocus_v=outcome.defocus_v,
            angle_deg=outcome.angle_deg,
            fit_resolution=outcome.fit_resolution,
            cc=outcome.cc,
            amplitude_contrast=parameters.amplitude_contrast,
            box_size=parameters.ctf_tile,
            min_resolution=parameters.ctf_min_resolution,
            max_resolution=parameters.ctf_max_resolution,
            min_defocus=parameters.min_defocus,
            max_defocus=parameters.max_defocus,
            power_spectrum_path=outcome.power_spectrum,
        ),
    )
    return mc_id, ctf_id


def _image(path: str | Path) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{Path(path).name}](data:image/png;base64,{encoded})"


@task
def publish_movie_artifacts(collection: CollectionDescription, outcome: MovieOutcome) -> None:
    """The movie's drift and power spectrum, with its numbers, for the Prefect UI."""
    name = Path(outcome.movie).stem
    lines = [
        f"# {name} (dc{collection.collection_id}, {collection.visit})",
        "",
        "| frames | total motion (Å) | defocus U / V (Å) | angle (°) | fit resolution (Å) |",
        "|---|---|---|---|---|",
        f"| {outcome.n_frames} | {outcome.total_motion:.1f} | {outcome.defocus_u:.0f} / "
        f"{outcome.defocus_v:.0f} | {outcome.angle_deg:.1f} | {outcome.fit_resolution:.2f} |",
        "",
        _image(outcome.drift_plot),
        _image(outcome.power_spectrum),
    ]
    create_markdown_artifact(
        key=f"em-dc{collection.collection_id}-movie", markdown="\n".join(lines)
    )


def latest_results(results: list[EMMovieResult]) -> list[EMMovieResult]:
    """Per movie, the result of its most recent successful program."""
    latest: dict[int, EMMovieResult] = {}
    for result in results:
        if result.program_status:
            latest[result.movie_id] = result  # results come oldest program first
    return sorted(latest.values(), key=lambda r: r.movie_number)


def session_statistics(results: list[EMMovieResult]) -> dict[str, Any]:
    """Running statistics of a session from its latest per-movie results."""
    done = latest_results(results)
    defocus = [0.5 * ((r.defocus_u or 0) + (r.defocus_v or 0)) for r in done]
    motion = [r.total_motion or 0.0 for r in done]
    resolution = [r.fit_resolution or 0.0 for r in done]

    def describe(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        array = np.asarray(values)
        return {
            "min": float(array.min()),
            "median": float(np.median(array)),
            "max": float(array.max()),
        }

    return {
        "n_movies": len(done),
        "defocus_angstrom": describe(defocus),
        "total_motion_angstrom": describe(motion),
        "fit_resolution_angstrom": describe(resolution),
        "movies": [
            {
                "movie": Path(r.movie_path).name,
                "defocus_u": r.defocus_u,
                "defocus_v": r.defocus_v,
                "astigmatism_angle": r.astigmatism_angle,
                "fit_resolution": r.fit_resolution,
                "total_motion": r.total_motion,
            }
            for r in done
        ],
    }


@task(**infrastructure_retries())
def publish_session_statistics(
    collection_id: int, folder: Path, lims_block: str | None
) -> dict[str, Any]:
    """Histograms of defocus, drift and fit resolution so far, as artifacts and files."""
    from prefect_beamline.emplots import session_histograms_png

    statistics = session_statistics(open_lims(lims_block).em_results(collection_id))
    folder.mkdir(parents=True, exist_ok=True)
    movies = statistics["movies"]
    plot = folder / "session_histograms.png"
    plot.write_bytes(
        session_histograms_png(
            [0.5 * ((m["defocus_u"] or 0) + (m["defocus_v"] or 0)) / 1e4 for m in movies],
            [m["total_motion"] or 0 for m in movies],
            [m["fit_resolution"] or 0 for m in movies],
        )
    )
    (folder / "session_statistics.json").write_text(json.dumps(statistics, indent=2))
    key = f"em-dc{collection_id}-session"
    if movies:
        create_table_artifact(
            key=f"{key}-movies", table=movies, description=f"Movies of dc{collection_id}"
        )
    create_markdown_artifact(
        key=f"{key}-statistics",
        markdown=f"# Session dc{collection_id}: {statistics['n_movies']} movies\n\n" + _image(plot),
    )
    return statistics


def _reprocess_session(
    collection_id: int, parameters: EMParameters | None, triggered_by: str, lims_block: str | None
) -> dict[str, Any]:
    """One flow run of this deployment per recorded movie (inline when run locally)."""
    from prefect.deployments import run_deployment

    movies = open_lims(lims_block).movies_for_collection(collection_id)
    if not movies:
        raise ValueError(f"data collection {collection_id} has no movies recorded in the LIMS")
    overrides = parameters.model_dump(exclude_unset=True) if parameters else {}
    deployment_name = current_deployment.name
    runs = []
    for movie in movies:
        arguments: dict[str, Any] = {
            "collection_id": collection_id,
            "parameters": overrides,
            "triggered_by": triggered_by or f"session-rerun:{current_flow_run.get_id()}",
            "lims_block": lims_block,
            "movie": movie.path,
        }
        if deployment_name:
            run = run_deployment(
                f"{MOVIE_FLOW}/{deployment_name}",
                parameters=arguments,
                timeout=0,
                as_subflow=False,
                tags=["rerun"],
            )
            runs.append(str(run.id))  # type: ignore[union-attr]
        else:
            arguments["parameters"] = EMParameters.model_validate(overrides)
            process_em_movie(**arguments)
    get_run_logger().info("reprocessing %d movies of dc%d", len(movies), collection_id)
    return {"reprocessing_movies": len(movies), "flow_runs": runs}


@flow(name=MOVIE_FLOW, log_prints=True)
def process_em_movie(
    collection_id: int,
    parameters: EMParameters | None = None,
    collection: CollectionEvent | None = None,
    triggered_by: str = "",
    lims_block: str | None = None,
    movie: str | None = None,
) -> dict[str, Any]:
    """Motion correction, dose weighting and CTF estimation of one movie.

    Args:
        collection_id: LIMS dataCollectionId of the session (grid square).
        parameters: settings; fields left out keep their defaults or the DAQ's values.
        collection: the DAQ's `images_ready` announcement; its first data file is the movie.
        triggered_by: "automation:<event id>" from a trigger, else who ran it.
        lims_block: name of a LIMS Database block; empty: PREFECT_BEAMLINE_LIMS_URL.
        movie: the movie to (re)process; with neither it nor `collection`, every movie of
            the collection is reprocessed, one flow run each.
    """
    movie = movie or (collection.data_files[0] if collection else None)
    if movie is None:
        return _reprocess_session(collection_id, parameters, triggered_by, lims_block)
    chosen = effective_parameters(collection, parameters)
    description = load_collection(collection_id, collection, lims_block)
    description = CollectionDescription(**{**asdict(description), "data_files": [movie]})
    job = record_processing_job(
        description,
        recipe=MOVIE_RECIPE,
        parameters={**chosen.model_dump(), "movie": movie},
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="motion correction + CTF",
    )
    with failure_recorded(description, job, lims_block, Path(movie).name):
        movie_id = record_movie(collection_id, movie, lims_block)
        outcome = correct_movie(movie, Path(movie).stem, chosen, job.results_dir)
        files = write_star_rows(job, outcome, chosen)
        record_em_results(job, movie_id, outcome, chosen, lims_block)
        attach_result_files(job, files, lims_block)
        publish_movie_artifacts(description, outcome)
    summary = {
        "movie": movie,
        "n_frames": outcome.n_frames,
        "total_motion_angstrom": outcome.total_motion,
        "defocus_u": outcome.defocus_u,
        "defocus_v": outcome.defocus_v,
        "astigmatism_angle": outcome.angle_deg,
        "fit_resolution_angstrom": outcome.fit_resolution,
        "timings_s": outcome.timings,
        "results_dir": str(job.results_dir),
        "processing_job_id": job.processing_job_id,
    }
    finish_processing_job(
        job,
        success=True,
        message=f"{Path(movie).name}: defocus {outcome.defocus_u:.0f}/{outcome.defocus_v:.0f} Å, "
        f"fit {outcome.fit_resolution:.1f} Å",
        lims_block=lims_block,
    )
    try:
        publish_session_statistics(collection_id, session_folder(movie, collection_id), lims_block)
    except Exception as error:  # the movie's results stand; the summary run redoes these
        get_run_logger().warning("session statistics not updated: %s", error)
    publish_processing_event(description, job, summary)
    return summary


@task
def wait_for_movie_runs(collection_id: int, timeout_s: float) -> int:
    """Wait (bounded) until no movie run of the collection is still scheduled or running."""
    from prefect.settings import PREFECT_API_URL

    from prefect_beamline.runs import TERMINAL_STATES, flow_runs_for_collection

    api_url = str(PREFECT_API_URL.value() or "")
    deployment = f"{MOVIE_FLOW}/{MOVIE_RECIPE}"
    deadline = time.monotonic() + timeout_s
    pending: list[Any] = []
    while api_url:
        try:
            runs = flow_runs_for_collection(api_url, deployment, collection_id)
        except LookupError:
            return 0
        pending = [run for run in runs if run.state not in TERMINAL_STATES]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return len(pending)


@flow(name="em-session-summary", log_prints=True)
def em_session_summary(
    collection_id: int,
    parameters: dict[str, Any] | None = None,
    collection: CollectionEvent | None = None,
    triggered_by: str = "",
    lims_block: str | None = None,
    wait_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Session statistics once its movie runs are done (the `finished` event starts it)."""
    description = load_collection(collection_id, collection, lims_block)
    job = record_processing_job(
        description,
        recipe=SUMMARY_RECIPE,
        parameters={"wait_timeout_s": wait_timeout_s, **(parameters or {})},
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="session statistics",
    )
    with failure_recorded(description, job, lims_block):
        still_running = wait_for_movie_runs(collection_id, wait_timeout_s)
        folder = session_folder(description.data_files[0], collection_id)
        statistics = publish_session_statistics(collection_id, folder, lims_block)
        attach_result_files(
            job,
            [
                (folder / "session_statistics.json", "Result"),
                (folder / "session_histograms.png", "Graph"),
                (folder / "micrographs_ctf.star", "Result"),
            ]
            if (folder / "micrographs_ctf.star").exists()
            else [(folder / "session_statistics.json", "Result")],
            lims_block,
        )
    summary = {
        "n_movies": statistics["n_movies"],
        "movies_still_running": still_running,
        "defocus_angstrom": statistics["defocus_angstrom"],
        "total_motion_angstrom": statistics["total_motion_angstrom"],
        "fit_resolution_angstrom": statistics["fit_resolution_angstrom"],
        "session_folder": str(folder),
    }
    finish_processing_job(
        job,
        success=True,
        message=f"{statistics['n_movies']} movies summarised",
        lims_block=lims_block,
    )
    publish_processing_event(description, job, summary)
    return summary
