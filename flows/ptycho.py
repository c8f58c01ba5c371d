"""Ptychography: ePIE / rPIE reconstruction of object and probe from a scan of patterns.

The flow a DAQ's `finished` event starts for a `ptycho` collection (see `prefect.yaml`),
and the one a scientist reruns with more iterations, the other algorithm or a probe from
an earlier run. Iterations run in one task that writes `checkpoint.h5` every
`iterations_per_checkpoint` iterations into the job's results folder: a retried task, or a
retried flow run (same flow run, same job, same folder), resumes there, not at iteration 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
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

from prefect_beamline.analysis.ptycho import (
    Reconstruction,
    detector_to_fft_order,
    initial_object,
    initial_probe,
    positions_in_pixels,
    run_iterations,
    scanned_area,
)
from prefect_beamline.events import CollectionEvent
from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.ptycho import PtychoScan
from prefect_beamline.formats.ptycho_results import (
    CHECKPOINT_FILE,
    RECONSTRUCTION_FILE,
    read_checkpoint,
    read_reconstruction,
    write_reconstruction,
)
from prefect_beamline.lims import CollectionDescription, PtychoResult

RECIPE = "ptycho"


class PtychoParameters(BaseModel):
    """Reconstruction settings; the Prefect UI shows these as a form."""

    model_config = ConfigDict(extra="forbid")

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
    probe_from: int | str | None = Field(
        None,
        description="Starting probe: reconstruction.h5 of an earlier run, or its processing "
        "job id; empty: estimated from the mean diffraction pattern",
    )
    iterations_per_checkpoint: int = Field(
        20, ge=1, description="Iterations between checkpoints (and progress reports)"
    )
    threads: int = Field(1, ge=1, le=256, description="Threads for FFTs and kernels")
    frames_per_chunk: int = Field(
        32, ge=1, le=4096, description="Frames read from the scan file at a time"
    )

    def checkpoint_key(self, scan_signature: str, probe_file: str | None) -> str:
        """What a checkpoint must match to be resumed from (not `iterations`: a checkpoint
        at 40 is a valid start for a run asking 100)."""
        shaping = self.model_dump(include={"algorithm", "alpha", "beta", "probe_update_start"})
        text = json.dumps([scan_signature, probe_file, shaping], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def effective_parameters(
    announced: CollectionEvent | None, chosen: PtychoParameters | None
) -> PtychoParameters:
    """DAQ-announced overrides, then the ones chosen for this run (UI, CLI) on top."""
    return merge_parameters(PtychoParameters, announced, chosen)


@dataclass(frozen=True)
class ReconstructionSummary:
    """What the reconstruction task hands on (the arrays stay in reconstruction.h5)."""

    reconstruction_file: str
    n_positions: int
    pattern_shape: tuple[int, int]
    object_shape: tuple[int, int]
    object_pixel_m: float
    iterations: int
    resumed_from_iteration: int
    final_error: float
    first_error: float
    algorithm: str


def scan_signature(scan_file: str) -> str:
    """Name, size and mtime: a rewritten scan never resumes an old checkpoint."""
    path = Path(scan_file)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def load_amplitudes(
    scan: PtychoScan, frames_per_chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(√I in FFT order, valid mask in FFT order, mean amplitude), read chunk by chunk.

    ePIE visits every pattern every iteration, so the amplitudes are held in memory
    (float32); the raw frames never are.
    """
    amplitudes = np.empty((scan.n_positions, *scan.pattern_shape), dtype=np.float32)
    for start, frames in scan.iter_chunks(frames_per_chunk):
        np.maximum(frames, 0.0, out=frames)
        amplitudes[start : start + len(frames)] = detector_to_fft_order(np.sqrt(frames))
    valid = detector_to_fft_order(scan.valid)
    amplitudes[:, ~valid] = 0.0
    return amplitudes, valid, amplitudes.mean(axis=0)


def starting_probe(
    probe_file: str | None,
    pattern_shape: tuple[int, int],
    mean_amplitude: np.ndarray,
    valid: np.ndarray,
) -> np.ndarray:
    """The probe of an earlier run, or one estimated from the mean pattern."""
    if probe_file is None:
        return initial_probe(mean_amplitude, valid)
    probe = read_reconstruction(Path(probe_file)).probe
    if probe.shape != pattern_shape:
        raise DataFileError(
            f"{probe_file}: /entry/reconstruction/probe has shape {probe.shape}, the scan's "
            f"patterns are {pattern_shape}"
        )
    return probe


def reconstruct_scan(
    scan_file: str,
    results_dir: Path,
    parameters: PtychoParameters,
    probe_file: str | None = None,
    on_block: Callable[[Reconstruction], None] | None = None,
) -> ReconstructionSummary:
    """Read the scan, start from the checkpoint (or a fresh guess), iterate, write results.

    Every `iterations_per_checkpoint` iterations `checkpoint.h5` is replaced atomically,
    then `on_block` runs (progress reports; tests raise there to simulate a crash).
    """
    key = parameters.checkpoint_key(scan_signature(scan_file), probe_file)
    with PtychoScan(scan_file) as scan:
        geometry = scan.geometry
        positions, object_shape = positions_in_pixels(
            scan.positions_m, geometry.object_pixel_m, scan.pattern_shape
        )
        amplitudes, valid, mean_amplitude = load_amplitudes(scan, parameters.frames_per_chunk)
    saved = read_checkpoint(results_dir, key)
    if (
        saved is not None
        and saved.obj.shape == object_shape
        and saved.probe.shape == scan.pattern_shape
    ):
        state = Reconstruction(saved.obj, saved.probe, saved.iteration, list(saved.errors))
    else:
        probe = starting_probe(probe_file, scan.pattern_shape, mean_amplitude, valid)
        state = Reconstruction(initial_object(object_shape), probe)
    resumed_from = state.iteration
    pixel_m = float(np.mean(geometry.object_pixel_m))

    def checkpoint(current: Reconstruction) -> None:
        write_reconstruction(
            results_dir / CHECKPOINT_FILE, current.obj, current.probe, current.errors, key=key
        )
        if on_block is not None:
            on_block(current)

    run_iterations(
        state,
        amplitudes,
        valid,
        positions,
        parameters.iterations,
        algorithm=parameters.algorithm,
        alpha=parameters.alpha,
        beta=parameters.beta,
        probe_update_start=parameters.probe_update_start,
        n_threads=parameters.threads,
        every=parameters.iterations_per_checkpoint,
        on_block=checkpoint,
    )
    output = write_reconstruction(
        results_dir / RECONSTRUCTION_FILE,
        state.obj,
        state.probe,
        state.errors,
        key=key,
        positions_px=positions,
        attributes={
            "algorithm": parameters.algorithm,
            "object_pixel_size_m": pixel_m,
            "scan_file": scan_file,
        },
    )
    return ReconstructionSummary(
        reconstruction_file=str(output),
        n_positions=len(positions),
        pattern_shape=scan.pattern_shape,
        object_shape=object_shape,
        object_pixel_m=pixel_m,
        iterations=state.iteration,
        resumed_from_iteration=resumed_from,
        final_error=state.errors[-1] if state.errors else float("nan"),
        first_error=state.errors[0] if state.errors else float("nan"),
        algorithm=parameters.algorithm,
    )


@task
def resolve_probe_file(probe_from: int | str | None, lims_block: str | None) -> str | None:
    """`probe_from` as a file: a path as given, a processing job id through the LIMS."""
    if probe_from is None or probe_from == "":
        return None
    probe_from = str(probe_from).strip()
    if probe_from.isdigit():
        found = open_lims(lims_block).ptycho_result_of_job(int(probe_from))
        if found is None:
            raise ValueError(
                f"probe_from: processing job {probe_from} recorded no ptychography result"
            )
        return found.reconstruction_file
    if not Path(probe_from).is_file():
        raise DataFileError(f"probe_from: {probe_from} does not exist")
    return probe_from


@task(task_run_name="reconstruct-{parameters.algorithm}", **infrastructure_retries())
def reconstruct(
    job: JobRecord,
    scan_file: str,
    parameters: PtychoParameters,
    probe_file: str | None,
    collection_id: int,
) -> ReconstructionSummary:
    """The iterations, checkpointed; progress in the logs and two live artifacts."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description="ePIE iterations done (%)")
    assert isinstance(progress, UUID)

    def report(state: Reconstruction) -> None:
        logger.info(
            "iteration %d/%d: error %.4g (checkpoint written)",
            state.iteration,
            parameters.iterations,
            state.errors[-1],
        )
        update_progress_artifact(progress, 100.0 * state.iteration / parameters.iterations)
        create_markdown_artifact(
            key=f"ptycho-dc{collection_id}-error",
            markdown=error_table(state.errors, parameters.iterations),
            description="Error metric so far (updated at every checkpoint)",
        )

    summary = reconstruct_scan(scan_file, job.results_dir, parameters, probe_file, report)
    if summary.resumed_from_iteration:
        logger.info("resumed from the checkpoint at iteration %d", summary.resumed_from_iteration)
    update_progress_artifact(progress, 100.0)
    return summary


def error_table(errors: list[float], iterations: int) -> str:
    """Markdown: the error at a dozen iterations spread over the run so far."""
    lines = [
        f"# ePIE progress: {len(errors)}/{iterations} iterations",
        "",
        "| iteration | error |",
        "|---|---|",
    ]
    marks = sorted({int(i) for i in np.linspace(1, len(errors), min(len(errors), 12))})
    lines += [f"| {i} | {errors[i - 1]:.4g} |" for i in marks]
    return "\n".join(lines)


def display_phase(
    obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray | None
) -> np.ndarray:
    """The object's phase with the arbitrary global offset removed: zero mean phase over
    the scanned area, so the image shows the sample, not the offset."""
    if positions_px is None:
        return np.angle(obj)
    lit = scanned_area(probe, positions_px, obj.shape)
    offset = np.angle(np.sum(obj[lit]))
    return np.angle(obj * np.exp(-1j * offset))


@task(**infrastructure_retries())
def write_ptycho_images(job: JobRecord, summary: ReconstructionSummary) -> list[tuple[Path, str]]:
    """Phase and amplitude PNGs, the error curve and summary.json beside the HDF5."""
    from prefect_beamline.analysis.ptycho_plots import error_png, map_png

    saved = read_reconstruction(Path(summary.reconstruction_file))
    folder = job.results_dir
    phase = folder / "object_phase.png"
    phase.write_bytes(
        map_png(
            display_phase(saved.obj, saved.probe, saved.positions_px),
            "Object phase (offset removed)",
            "rad",
            summary.object_pixel_m,
            "viridis",
        )
    )
    amplitude = folder / "object_amplitude.png"
    amplitude.write_bytes(
        map_png(np.abs(saved.obj), "Object amplitude", "", summary.object_pixel_m, "gray")
    )
    errors = folder / "error.png"
    errors.write_bytes(error_png(saved.errors))
    summary_file = folder / "summary.json"
    summary_file.write_text(json.dumps(asdict(summary), indent=2))
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    return [
        (Path(summary.reconstruction_file), "Result"),
        (phase, "Graph"),
        (amplitude, "Graph"),
        (errors, "Graph"),
        (summary_file, "Result"),
    ]


@task(**infrastructure_retries())
def record_ptycho_result(
    job: JobRecord, summary: ReconstructionSummary, lims_block: str | None
) -> None:
    """The PtychographyResult row of this job's program, idempotently."""
    open_lims(lims_block).record_ptycho_result(
        job.program_id,
        job.data_collection_id,
        PtychoResult(
            algorithm=summary.algorithm,
            iterations=summary.iterations,
            n_positions=summary.n_positions,
            final_error=summary.final_error,
            object_pixel_m=summary.object_pixel_m,
            reconstruction_file=summary.reconstruction_file,
        ),
    )


@task
def publish_ptycho_artifacts(
    collection: CollectionDescription, summary: ReconstructionSummary, images: list[Path]
) -> None:
    """A markdown report with the phase and amplitude images, for the Prefect UI."""
    lines = [
        f"# Ptychography: dc{collection.collection_id} ({collection.beamline}, {collection.visit})",
        "",
        "| positions | patterns | algorithm | iterations | final error | pixel (nm) |",
        "|---|---|---|---|---|---|",
        f"| {summary.n_positions} | {summary.pattern_shape[0]}×{summary.pattern_shape[1]} | "
        f"{summary.algorithm} | {summary.iterations} | {summary.final_error:.4g} | "
        f"{summary.object_pixel_m * 1e9:.1f} |",
        "",
    ]
    for image in images:
        encoded = base64.b64encode(image.read_bytes()).decode()
        lines.append(f"![{image.name}](data:image/png;base64,{encoded})")
    create_markdown_artifact(
        key=f"ptycho-dc{collection.collection_id}-report", markdown="\n".join(lines)
    )


@task
def scan_file_of(collection: CollectionDescription) -> str:
    """The scan file: the first (and only) data file of the collection."""
    return collection.data_files[0]


@flow(name="ptycho-processing", log_prints=True)
def process_ptycho(
    collection_id: int,
    parameters: PtychoParameters | None = None,
    collection: CollectionEvent | None = None,
    triggered_by: str = "",
    lims_block: str | None = None,
) -> dict[str, Any]:
    """Reconstruct object and probe of a ptychography scan; publish phase and amplitude.

    Args:
        collection_id: LIMS dataCollectionId; a manual rerun needs only this.
        parameters: reconstruction settings; fields left out keep their defaults or the
            values the DAQ announced.
        collection: the DAQ's announcement (automations pass it; it is recorded in the LIMS).
        triggered_by: "automation:<event id>" from a trigger, else who ran it.
        lims_block: name of a LIMS Database block; empty: PREFECT_BEAMLINE_LIMS_URL.
    """
    chosen = effective_parameters(collection, parameters)
    description = load_collection(collection_id, collection, lims_block)
    job = record_processing_job(
        description,
        recipe=RECIPE,
        parameters=chosen.model_dump(),
        triggered_by=triggered_by,
        lims_block=lims_block,
        program=chosen.algorithm,
    )
    with failure_recorded(description, job, lims_block):
        probe_file = resolve_probe_file(chosen.probe_from, lims_block)
        summary = reconstruct(
            job, scan_file_of(description), chosen, probe_file, description.collection_id
        )
        files = write_ptycho_images(job, summary)
        record_ptycho_result(job, summary, lims_block)
        attach_result_files(job, files, lims_block)
        publish_ptycho_artifacts(description, summary, [path for path, _ in files[1:3]])
    message = (
        f"{summary.algorithm} {summary.iterations} iterations on {summary.n_positions} "
        f"positions, error {summary.final_error:.3g}"
    )
    finish_processing_job(job, success=True, message=message, lims_block=lims_block)
    result = {
        **asdict(summary),
        "results_dir": str(job.results_dir),
        "processing_job_id": job.processing_job_id,
    }
    publish_processing_event(description, job, result)
    return result
