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

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from prefect_beamline.events import CollectionEvent
from prefect_beamline.flows.common import (
    Job,
    infrastructure_retries,
    open_job,
    open_lims,
    technique_flow,
)
from prefect_beamline.flows.compute import configured_compute
from prefect_beamline.flows.rerun import (
    NO_CHANGES,
    Announcement,
    CollectionId,
    LimsBlock,
    ScienceParameters,
    TriggeredBy,
)
from prefect_beamline.formats.mrc import EERRendering
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.metrics import timed_chunk
from prefect_beamline.techniques.em import records, report, session
from prefect_beamline.techniques.em.ctf import Microscope
from prefect_beamline.techniques.em.movie import MovieSettings, process_movie
from prefect_beamline.techniques.em.records import EMMovieResult
from prefect_beamline.techniques.em.results_files import write_movie_results, write_tables
from prefect_beamline.techniques.em.session import MOVIE_DEPLOYMENT, MOVIE_FLOW


class EMParameters(ScienceParameters):
    """Motion correction and CTF settings; the Prefect UI shows these as a form."""

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
    eer_grouping: int = Field(
        20, ge=1, le=1000, description="EER movies: EER frames summed into one frame"
    )
    eer_upsampling: Literal[1, 2] = Field(
        1, description="EER movies: 1 renders 4K (sensor pixels), 2 renders 8K"
    )

    def settings(self) -> MovieSettings:
        return MovieSettings(
            pixel_size_angstrom=self.pixel_size_angstrom,
            dose_per_frame=self.dose_per_frame,
            pre_exposure=self.pre_exposure,
            microscope=self.microscope(),
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
            eer=EERRendering(self.eer_grouping, self.eer_upsampling),
        )

    def microscope(self) -> Microscope:
        return Microscope(self.voltage_kv, self.cs_mm, self.amplitude_contrast)


@task(**infrastructure_retries())
def record_movie(job: Job, movie: str) -> int:
    """The Movie row (before processing, so a failed movie is still listed)."""
    return records.record_movie(job.lims(), job.data_collection_id, movie)


@task(task_run_name="motioncor-ctf-{movie_name}")
@timed_chunk("em")
def correct_movie(
    movie: str, movie_name: str, parameters: EMParameters, results_dir: Path, n_threads: int
) -> EMMovieResult:
    """Motion correction, dose weighting and CTF fit; writes micrograph and plots.

    `n_threads` (from the Compute block) says where the kernels run, not what they give.
    """
    settings = parameters.settings()
    processed = process_movie(movie, parameters.gain_reference, settings, n_threads)
    return write_movie_results(movie, processed, settings, results_dir, parameters.gain_reference)


@task(**infrastructure_retries())
def write_star_rows(
    job: Job, result: EMMovieResult, parameters: EMParameters
) -> list[tuple[Path, str]]:
    """The movie's rows: in the job's own STAR files and in the session's shared ones."""
    return write_tables(
        result, parameters.microscope(), job.results_dir, session.session_folder(job.collection)
    )


@task(**infrastructure_retries())
def record_em_results(job: Job, movie_id: int, result: EMMovieResult) -> tuple[int, int | None]:
    """MotionCorrection (+ per-frame drift) and CTF rows; (motionCorrectionId, ctfId)."""
    return records.record_movie_result(
        job.lims(), job.program_id, job.data_collection_id, movie_id, result
    )


@task
def publish_movie_artifacts(collection: CollectionDescription, result: EMMovieResult) -> None:
    """The movie's drift and power spectrum, with its numbers, for the Prefect UI."""
    report.publish_movie_artifacts(collection, result)


@task(**infrastructure_retries())
def publish_session_statistics(job: Job) -> dict[str, Any]:
    """Histograms of defocus, drift and fit resolution so far, as artifacts and files."""
    recorded = records.em_results(job.lims(), job.data_collection_id)
    statistics = session.session_statistics(recorded)
    plot = session.write_session_statistics(session.session_folder(job.collection), statistics)
    report.publish_session_artifacts(job.data_collection_id, statistics, plot)
    return statistics


def refresh_session_statistics(job: Job) -> None:
    """After each movie; a failure here leaves the movie's results standing (the summary
    run redoes the statistics)."""
    try:
        publish_session_statistics(job)
    except Exception as error:
        get_run_logger().warning("session statistics not updated: %s", error)


def reprocess_session(
    collection_id: int,
    parameters: EMParameters | Mapping[str, Any],
    triggered_by: str,
    lims_block: str | None,
) -> dict[str, Any]:
    """One flow run of this deployment per recorded movie (inline when run locally)."""
    from prefect.deployments import run_deployment

    movies = records.movies_for_collection(open_lims(lims_block), collection_id)
    if not movies:
        raise ValueError(f"data collection {collection_id} has no movies recorded in the LIMS")
    if isinstance(parameters, EMParameters):
        overrides = parameters.model_dump(mode="json", exclude_unset=True)
    else:
        overrides = dict(parameters)
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


def announced_movie(movie: str | None, collection: CollectionEvent | None) -> str | None:
    """The movie to process: named, else the announcement's data file, else none."""
    return movie or (collection.data_files[0] if collection else None)


@technique_flow(
    MOVIE_FLOW,
    more_arguments="""
    movie: the movie to (re)process; with neither it nor `collection` (a rerun naming
        only the session), every movie of the collection is reprocessed, one run each.
    """,
)
def process_em_movie(
    collection_id: CollectionId,
    parameters: EMParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
    movie: str = "",
) -> dict[str, Any]:
    """Motion correction, dose weighting and CTF estimation of one movie."""
    movie_file = announced_movie(movie, collection)
    if movie_file is None:
        return reprocess_session(collection_id, parameters, triggered_by, lims_block)
    job = open_job(
        collection_id,
        collection,
        parameters,
        model=EMParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="motion correction + CTF",
        data_file=movie_file,
        extra={"movie": movie_file},
    )
    chosen = job.settings(EMParameters)
    with job.failure_recorded(what=Path(movie_file).name):
        n_threads = configured_compute().threads_per_chunk
        movie_id = record_movie(job, movie_file)
        result = correct_movie(
            movie_file, Path(movie_file).stem, chosen, job.results_dir, n_threads
        )
        files = write_star_rows(job, result, chosen)
        record_em_results(job, movie_id, result)
        publish_movie_artifacts(job.collection, result)
        summary = job.finish(report.movie_summary(result), report.movie_message(result), files)
    refresh_session_statistics(job)
    return summary


@task
def wait_for_movie_runs(collection_id: int, timeout_s: float) -> int:
    """Wait (bounded) until no movie run of the collection is still scheduled or running."""
    from prefect.settings import PREFECT_API_URL

    from prefect_beamline.runs import TERMINAL_STATES, flow_runs_for_collection

    api_url = str(PREFECT_API_URL.value() or "")
    deadline = time.monotonic() + timeout_s
    pending: list[Any] = []
    while api_url:
        try:
            runs = flow_runs_for_collection(api_url, MOVIE_DEPLOYMENT, collection_id)
        except LookupError:
            return 0
        pending = [run for run in runs if run.state not in TERMINAL_STATES]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return len(pending)


@technique_flow(
    "em-session-summary",
    more_arguments="wait_timeout_s: how long to wait for the movie runs still going, s",
)
def em_session_summary(
    collection_id: CollectionId,
    parameters: SkipJsonSchema[dict[str, Any] | None] = None,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
    wait_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Session statistics once its movie runs are done (the `finished` event starts it)."""
    job = open_job(
        collection_id,
        collection,
        {"wait_timeout_s": wait_timeout_s, **(parameters or {})},
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="session statistics",
    )
    with job.failure_recorded():
        folder = session.session_folder(job.collection)
        still_running = wait_for_movie_runs(collection_id, wait_timeout_s)
        statistics = publish_session_statistics(job)
        return job.finish(
            session.session_summary(statistics, still_running, folder),
            message=f"{statistics['n_movies']} movies summarised",
            files=session.session_result_files(folder),
        )
