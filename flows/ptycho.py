"""Ptychography: ePIE / rPIE reconstruction of object and probe from a scan of patterns.

The flow a DAQ's `finished` event starts for a `ptycho` collection (see `prefect.yaml`),
and the one a scientist reruns with more iterations, the other algorithm or a probe from
an earlier run. Iterations run in one task that writes `checkpoint.h5` every
`iterations_per_checkpoint` iterations into the job's results folder: a retried task, or a
retried flow run (same flow run, same job, same folder), resumes there, not at iteration 0.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import Field, field_validator

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
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.metrics import timed_chunk
from prefect_beamline.techniques.ptycho import records, report
from prefect_beamline.techniques.ptycho.analysis import Reconstruction
from prefect_beamline.techniques.ptycho.reconstruct import reconstruct_scan
from prefect_beamline.techniques.ptycho.records import PtychoResult


class PtychoParameters(ScienceParameters):
    """Reconstruction settings; the Prefect UI shows these as a form."""

    iterations: int = Field(100, ge=1, le=100_000, description="Passes over every position")
    algorithm: Literal["epie", "rpie"] = Field(
        "epie", description="epie (Maiden & Rodenburg 2009) or rpie (regularised, 2017)"
    )
    alpha: float = Field(
        1.0, gt=0, le=1, description="Object step (ePIE) or object regularisation (rPIE)"
    )
    beta: float = Field(1.0, ge=0, le=1, description="Probe step (ePIE) or regularisation (rPIE)")
    probe_update_start: int = Field(
        1, ge=0, description="Iteration from which the probe is refined (0: from the start)"
    )
    probe_from: str | None = Field(
        None,
        description="Starting probe: reconstruction.h5 of an earlier run, or its processing "
        "job id; empty: estimated from the mean diffraction pattern",
    )

    @field_validator("probe_from", mode="before")
    @classmethod
    def _job_id_as_text(cls, value: object) -> object:
        """A processing job id may come as a number (the DAQ's JSON)."""
        return str(value) if isinstance(value, int) else value

    probe_modes: int = Field(
        1,
        ge=1,
        le=8,
        description="Incoherent probe modes (mixed-state ePIE; 1: a fully coherent probe)",
    )
    subpixel_positions: bool = Field(
        False,
        description="Keep positions between object pixels (bilinear patches) instead of "
        "rounding them to the nearest pixel",
    )
    iterations_per_checkpoint: int = Field(
        20, ge=1, description="Iterations between checkpoints (and progress reports)"
    )
    frames_per_chunk: int = Field(
        32, ge=1, le=4096, description="Frames read from the scan file at a time"
    )


@task
def resolve_probe_file(probe_from: int | str | None, lims_block: str | None) -> str | None:
    """`probe_from` as a file: a path as given, a processing job id through the LIMS."""
    if probe_from is None or probe_from == "":
        return None
    probe_from = str(probe_from).strip()
    if probe_from.isdigit():
        found = records.ptycho_result_of_job(open_lims(lims_block), int(probe_from))
        if found is None:
            raise ValueError(
                f"probe_from: processing job {probe_from} recorded no ptychography result"
            )
        return found.reconstruction_file
    if not Path(probe_from).is_file():
        raise DataFileError(f"probe_from: {probe_from} does not exist")
    return probe_from


@task
def scan_file_of(collection: CollectionDescription) -> str:
    """The scan file: the first (and only) data file of the collection."""
    return collection.data_files[0]


@task(task_run_name="reconstruct-{parameters.algorithm}", **infrastructure_retries())
@timed_chunk("ptycho")
def reconstruct(
    job: Job,
    scan_file: str,
    parameters: PtychoParameters,
    probe_file: str | None,
    n_threads: int,
) -> PtychoResult:
    """The iterations, checkpointed; progress in the logs and two live artifacts.

    `n_threads` (from the Compute block) says where the iterations run, not what they give.
    """
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description="ePIE iterations done (%)")
    assert isinstance(progress, UUID)

    def report_progress(state: Reconstruction) -> None:
        logger.info(
            "iteration %d/%d: error %.4g (checkpoint written)",
            state.iteration,
            parameters.iterations,
            state.errors[-1],
        )
        update_progress_artifact(progress, 100.0 * state.iteration / parameters.iterations)
        report.publish_error_table(job.data_collection_id, state.errors, parameters.iterations)

    result = reconstruct_scan(
        scan_file, job.results_dir, parameters, probe_file, report_progress, n_threads
    )
    if result.resumed_from_iteration:
        logger.info("resumed from the checkpoint at iteration %d", result.resumed_from_iteration)
    update_progress_artifact(progress, 100.0)
    return replace(result, processing_job_id=job.processing_job_id)


@task(**infrastructure_retries())
def write_ptycho_images(job: Job, result: PtychoResult) -> list[tuple[Path, str]]:
    """Phase and amplitude PNGs, the error curve and summary.json beside the HDF5."""
    return report.write_result_files(job.results_dir, result)


@task(**infrastructure_retries())
def record_ptycho_result(job: Job, result: PtychoResult) -> None:
    """The PtychographyResult row of this job's program, idempotently."""
    records.record_ptycho_result(job.lims(), job.program_id, job.data_collection_id, result)


@task
def publish_ptycho_artifacts(
    collection: CollectionDescription, result: PtychoResult, files: list[tuple[Path, str]]
) -> None:
    """A markdown report with the phase and amplitude images, for the Prefect UI."""
    report.publish_artifacts(collection, result, files)


@technique_flow("ptycho-processing")
def process_ptycho(
    collection_id: CollectionId,
    parameters: PtychoParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Reconstruct object and probe of a ptychography scan; publish phase and amplitude."""
    job = open_job(
        collection_id,
        collection,
        parameters,
        model=PtychoParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="ePIE / rPIE",
    )
    chosen = job.settings(PtychoParameters)
    with job.failure_recorded():
        n_threads = configured_compute().threads_per_chunk
        probe_file = resolve_probe_file(chosen.probe_from, lims_block)
        scan_file = scan_file_of(job.collection)
        result = reconstruct(job, scan_file, chosen, probe_file, n_threads)
        files = write_ptycho_images(job, result)
        record_ptycho_result(job, result)
        publish_ptycho_artifacts(job.collection, result, files)
        return job.finish(asdict(result), message=report.summary_line(result), files=files)
