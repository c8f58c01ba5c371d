"""Tomography: normalisation, ring removal, centre of rotation, filtered back projection.

The flow a DAQ's `finished` event starts for a tomography scan (NXtomo or Data Exchange,
see `prefect.yaml`), and the one a scientist reruns from the UI with another centre,
ring filter or slice range.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect_beamline.ext.backproject import FilterName, reconstruct
from prefect_beamline.ext.tomo_preprocess import normalise, ring_filter
from prefect_beamline.flows.common import (
    CHUNK_CACHE_EXPIRATION,
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
from prefect_beamline.flows.compute import task_runner_for
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_beamline.analysis.tomo import (
    CentreEstimate,
    centre_by_sinogram_metric,
    centre_from_opposite_projections,
    opposite_pair,
)
from prefect_beamline.events import CollectionEvent
from prefect_beamline.formats.nxtomo import TomoScan
from prefect_beamline.formats.tomo_volume import VolumeWriter, central_slices
from prefect_beamline.lims import CollectionDescription, TomogramRecord

RECIPE_PREFIX = "tomo"
VOLUME_FILE = "volume.h5"
PREVIEWS = {"xy": "slice_xy.png", "xz": "slice_xz.png", "yz": "slice_yz.png"}


class TomoParameters(BaseModel):
    """Reconstruction and compute settings; the Prefect UI shows these as a form."""

    model_config = ConfigDict(extra="forbid")

    centre_of_rotation: float | None = Field(
        None,
        description="Detector column the rotation axis projects to (pixels, 0-based, "
        "fractional); empty: found from the 0°/180° pair or a sinogram metric",
    )
    centre_search_radius: float = Field(
        20.0, gt=0, le=1000, description="Sinogram-metric search: ± pixels around the middle"
    )
    ring_filter: bool = Field(True, description="Remove ring artefacts (stripes in sinograms)")
    ring_filter_width: int = Field(
        9, ge=3, le=201, description="Detector columns in the ring filter's median (odd)"
    )
    filter_name: FilterName = Field(
        "ramp", description="FBP filter: ramp, shepp-logan, cosine, hamming or hann"
    )
    first_slice: int | None = Field(
        None, ge=0, description="First detector row to reconstruct (0-based); empty: the first"
    )
    last_slice: int | None = Field(
        None, ge=0, description="Last detector row to reconstruct (inclusive); empty: the last"
    )
    slices_per_chunk: int = Field(
        8, ge=1, le=4096, description="Slices per task: the unit of retry, cache and fan-out"
    )
    parallel_chunks: int = Field(
        2,
        ge=1,
        le=256,
        description="Chunks reconstructed at once on the thread runner (twice as many are "
        "in flight, in memory, at a time)",
    )
    cache_chunks: bool = Field(
        True,
        description="Keep each chunk's slices in Prefect's result storage (14 days), so a "
        "retried or identical rerun reuses them; costs as much disk as the volume",
    )
    threads_per_chunk: int = Field(1, ge=1, le=256, description="Kernel threads per chunk")
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); empty: local threads"
    )
    compute_block: str | None = Field(
        None, description="Name of a Dask Compute block to run chunks on (wins over threads)"
    )

    @field_validator("ring_filter_width")
    @classmethod
    def _odd(cls, width: int) -> int:
        if width % 2 == 0:
            raise ValueError(f"ring_filter_width must be odd, got {width}")
        return width


def effective_parameters(
    announced: CollectionEvent | None, chosen: TomoParameters | None
) -> TomoParameters:
    """DAQ-announced overrides, then the ones chosen for this run (UI, CLI) on top."""
    return merge_parameters(TomoParameters, announced, chosen)


@dataclass(frozen=True)
class ScanInfo:
    """What the flow needs to know about a scan before reconstructing it."""

    path: str
    signature: str
    layout: str
    n_projections: int
    n_rows: int
    n_columns: int
    angles_deg: list[float]


@task(**infrastructure_retries())
def inspect_scan(scan_file: str) -> ScanInfo:
    """Open the scan, check its layout and fields, and note its size and angles.

    The signature (size and mtime) goes into every chunk's cache key, so a rewritten
    file never gets stale cached slices.
    """
    path = Path(scan_file)
    with TomoScan(path) as scan:
        stat = path.stat()
        return ScanInfo(
            path=str(path),
            signature=f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}",
            layout=scan.layout,
            n_projections=scan.n_projections,
            n_rows=scan.n_rows,
            n_columns=scan.n_columns,
            angles_deg=[float(a) for a in scan.angles_deg],
        )


def slice_range(scan: ScanInfo, parameters: TomoParameters) -> tuple[int, int]:
    """(first, stop) detector rows to reconstruct; ValueError names a bad bound."""
    first = parameters.first_slice if parameters.first_slice is not None else 0
    last = parameters.last_slice if parameters.last_slice is not None else scan.n_rows - 1
    if not 0 <= first <= last < scan.n_rows:
        raise ValueError(
            f"slice range first_slice={first}, last_slice={last} is outside the detector's "
            f"rows 0..{scan.n_rows - 1} ({scan.path})"
        )
    return first, last + 1


@task(**infrastructure_retries())
def find_centre(
    scan: ScanInfo, rows: tuple[int, int], parameters: TomoParameters
) -> CentreEstimate:
    """The user's centre if given, else from the 0°/180° pair, else by sinogram metric."""
    if parameters.centre_of_rotation is not None:
        centre = parameters.centre_of_rotation
        if not 0.0 <= centre <= scan.n_columns - 1:
            raise ValueError(
                f"centre_of_rotation {centre} is off the detector (columns 0.."
                f"{scan.n_columns - 1}) of {scan.path}"
            )
        return CentreEstimate(centre, "user")
    first, stop = rows
    angles = np.asarray(scan.angles_deg)
    with TomoScan(scan.path) as data:
        flat, dark = data.flat_and_dark(first, stop)
        pair = opposite_pair(angles)
        if pair is not None:
            frames = data.read_projections(list(pair))[:, first:stop]
            sinograms = normalise(frames, flat, dark, n_threads=parameters.threads_per_chunk)
            centre = centre_from_opposite_projections(sinograms[:, 0, :], sinograms[:, 1, :])
            return CentreEstimate(round(centre, 3), "0/180 pair")
        middle = (first + stop) // 2
        sinogram = normalise(
            data.read_rows(middle, middle + 1),
            flat[middle - first : middle - first + 1],
            dark[middle - first : middle - first + 1],
        )[0]
    radius = parameters.centre_search_radius
    candidates = np.arange(-radius, radius + 0.5, 1.0) + (scan.n_columns - 1) / 2.0
    candidates = candidates[(candidates >= 0) & (candidates <= scan.n_columns - 1)]
    centre = centre_by_sinogram_metric(sinogram, candidates)
    return CentreEstimate(round(centre, 3), "sinogram metric")


@task(
    task_run_name="reconstruct-rows-{first_row}-{stop_row}",
    cache_policy=INPUTS,
    cache_expiration=CHUNK_CACHE_EXPIRATION,
    persist_result=True,
    **infrastructure_retries(),
)
def reconstruct_rows(
    scan_file: str,
    signature: str,
    first_row: int,
    stop_row: int,
    centre: float,
    parameters: TomoParameters,
) -> np.ndarray:
    """Slices (row, y, x) of detector rows first_row..stop_row-1: normalise, remove
    rings, filter and back-project. Reads only those rows' sinograms."""
    threads = parameters.threads_per_chunk
    with TomoScan(scan_file) as scan:
        flat, dark = scan.flat_and_dark(first_row, stop_row)
        sinograms = normalise(scan.read_rows(first_row, stop_row), flat, dark, n_threads=threads)
        angles = scan.angles_rad
    if parameters.ring_filter:
        ring_filter(sinograms, width=parameters.ring_filter_width, n_threads=threads)
    return reconstruct(
        sinograms, angles, centre, filter_name=parameters.filter_name, n_threads=threads
    )


@flow(name="tomo-fbp", log_prints=True)
def reconstruct_volume(
    scan: ScanInfo,
    rows: tuple[int, int],
    centre: CentreEstimate,
    parameters: TomoParameters,
    results_dir: Path,
) -> Path:
    """Fan chunks of slices out over the task runner and write each into the volume as
    it finishes; the volume gets its final name only when every slice is in.

    A chunk that fails (after its retries) fails the run and removes the partial volume.
    """
    first, stop = rows
    chunks = [
        (start, min(start + parameters.slices_per_chunk, stop))
        for start in range(first, stop, parameters.slices_per_chunk)
    ]
    progress = create_progress_artifact(0.0, description="Slices reconstructed (%)")
    assert isinstance(progress, UUID)
    process = {
        "centre_of_rotation": centre.centre,
        "centre_method": centre.method,
        "scan_file": scan.path,
        "parameters": parameters.model_dump(mode="json"),
    }
    shape = (stop - first, scan.n_columns, scan.n_columns)
    with VolumeWriter(results_dir / VOLUME_FILE, shape, first_row=first, process=process) as out:
        chunk_task = (
            reconstruct_rows
            if parameters.cache_chunks
            else reconstruct_rows.with_options(cache_policy=NO_CACHE, persist_result=False)
        )
        # At most `window` chunks in flight: each finished chunk is written and dropped
        # before the next is submitted, so memory holds a few chunks, never the volume.
        window = 2 * parameters.parallel_chunks
        waiting = iter(chunks)
        in_flight: dict[PrefectFuture[np.ndarray], int] = {}

        def submit_next() -> None:
            chunk = next(waiting, None)
            if chunk is not None:
                future = chunk_task.submit(
                    scan.path, scan.signature, chunk[0], chunk[1], centre.centre, parameters
                )
                in_flight[future] = chunk[0]

        for _ in range(window):
            submit_next()
        done = 0
        while in_flight:
            finished = next(as_completed(list(in_flight)))
            out.write(in_flight.pop(finished) - first, finished.result())
            del finished
            done += 1
            update_progress_artifact(progress, 100.0 * done / len(chunks))
            submit_next()
    get_run_logger().info("reconstructed %d slices in %d chunks", shape[0], len(chunks))
    return out.path


@task(**infrastructure_retries())
def write_previews(job: JobRecord, volume_file: Path) -> dict[str, Path]:
    """PNGs of the three orthogonal planes through the volume's centre."""
    # matplotlib is imported here, not at module import: flow runs start sooner.
    from prefect_beamline.plots import tomo_slice_png

    planes = central_slices(volume_file)
    titles = {"xy": "central slice (xy)", "xz": "vertical plane (xz)", "yz": "vertical plane (yz)"}
    written = {}
    for plane, image in planes.items():
        path = job.results_dir / PREVIEWS[plane]
        path.write_bytes(tomo_slice_png(image, titles[plane]))
        written[plane] = path
    return written


def summarise(
    scan: ScanInfo,
    rows: tuple[int, int],
    centre: CentreEstimate,
    parameters: TomoParameters,
    volume_file: Path,
) -> dict[str, Any]:
    """The numbers published in the completion event and summary.json."""
    return {
        "n_projections": scan.n_projections,
        "layout": scan.layout,
        "shape": [rows[1] - rows[0], scan.n_columns, scan.n_columns],
        "slice_range": [rows[0], rows[1] - 1],
        "centre_of_rotation": centre.centre,
        "centre_method": centre.method,
        "filter_name": parameters.filter_name,
        "ring_filter": parameters.ring_filter,
        "volume_file": str(volume_file),
    }


@task(**infrastructure_retries())
def write_tomo_summary(
    job: JobRecord, summary: dict[str, Any], previews: dict[str, Path]
) -> list[tuple[Path, str]]:
    """summary.json; returns every result file with its ISPyB attachment type."""
    summary_file = job.results_dir / "summary.json"
    summary_file.write_text(json.dumps(summary, indent=2))
    return [
        (Path(summary["volume_file"]), "Result"),
        (summary_file, "Result"),
        *((path, "Graph") for path in previews.values()),
    ]


@task(**infrastructure_retries())
def record_tomogram(
    job: JobRecord, summary: dict[str, Any], previews: dict[str, Path], lims_block: str | None
) -> None:
    """The Tomogram row: volume path, size, centre and previews (idempotent)."""
    n_z, n_y, n_x = summary["shape"]
    open_lims(lims_block).record_tomogram(
        job.program_id,
        job.data_collection_id,
        TomogramRecord(
            volume_file=summary["volume_file"],
            size_x=n_x,
            size_y=n_y,
            size_z=n_z,
            centre_of_rotation=summary["centre_of_rotation"],
            centre_method=summary["centre_method"],
            central_slice_image=str(previews["xy"]),
            xz_image=str(previews["xz"]),
            yz_image=str(previews["yz"]),
        ),
    )


@task
def publish_tomo_artifacts(
    collection: CollectionDescription, summary: dict[str, Any], previews: dict[str, Path]
) -> None:
    """A summary table and a markdown report with the three previews, for the Prefect UI."""
    key = f"tomo-dc{collection.collection_id}"
    create_table_artifact(
        key=f"{key}-summary",
        table=[{"quantity": name, "value": str(value)} for name, value in summary.items()],
        description=f"Tomographic reconstruction, data collection {collection.collection_id}",
    )
    n_z, n_y, n_x = summary["shape"]
    lines = [
        f"# Tomography: dc{collection.collection_id} ({collection.beamline}, {collection.visit})",
        "",
        "| projections | volume (z × y × x) | centre of rotation (px) | filter | ring filter |",
        "|---|---|---|---|---|",
        f"| {summary['n_projections']} | {n_z} × {n_y} × {n_x} | "
        f"{summary['centre_of_rotation']:.2f} ({summary['centre_method']}) | "
        f"{summary['filter_name']} | {'on' if summary['ring_filter'] else 'off'} |",
        "",
        f"Volume: `{summary['volume_file']}`",
        "",
    ]
    for plane, path in previews.items():
        image = base64.b64encode(path.read_bytes()).decode()
        lines += [f"**{plane}**", "", f"![{path.name}](data:image/png;base64,{image})", ""]
    create_markdown_artifact(key=f"{key}-report", markdown="\n".join(lines))


@flow(name="tomo-processing", log_prints=True)
def process_tomo(
    collection_id: int,
    parameters: TomoParameters | None = None,
    collection: CollectionEvent | None = None,
    triggered_by: str = "",
    lims_block: str | None = None,
) -> dict[str, Any]:
    """Reconstruct a tomography scan into a volume, with previews and LIMS rows.

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
    recipe = f"{RECIPE_PREFIX}-{description.experiment_type}"
    job = record_processing_job(
        description,
        recipe=recipe,
        parameters=chosen.model_dump(),
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="filtered back projection",
    )
    with failure_recorded(description, job, lims_block):
        scan = inspect_scan(description.data_files[0])
        rows = slice_range(scan, chosen)
        centre = find_centre(scan, rows, chosen)
        runner = task_runner_for(
            chosen.dask_scheduler, chosen.compute_block, chosen.parallel_chunks
        )
        volume_file = reconstruct_volume.with_options(task_runner=runner)(
            scan, rows, centre, chosen, job.results_dir
        )
        previews = write_previews(job, volume_file)
        summary = summarise(scan, rows, centre, chosen, volume_file)
        files = write_tomo_summary(job, summary, previews)
        record_tomogram(job, summary, previews, lims_block)
        attach_result_files(job, files, lims_block)
        publish_tomo_artifacts(description, summary, previews)
    finish_processing_job(
        job,
        success=True,
        message=f"{summary['shape'][0]} slices reconstructed, centre {centre.centre:.2f} px",
        lims_block=lims_block,
    )
    summary = {
        **summary,
        "results_dir": str(job.results_dir),
        "processing_job_id": job.processing_job_id,
    }
    publish_processing_event(description, job, summary)
    return summary
