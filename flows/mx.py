"""MX per-image analysis: spot finding on every image, resolution, grid-scan X-ray centre.

The flow a DAQ's `finished` event starts for a rotation or grid-scan collection (see
`prefect.yaml`), and the one a scientist reruns from the UI with changed parameters.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
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
from prefect.cache_policies import INPUTS
from prefect.futures import as_completed
from prefect_beamline.ext.spotfind import DispersionParameters, find_spots
from prefect_beamline.flows.common import (
    CHUNK_CACHE_EXPIRATION,
    JobRecord,
    attach_result_files,
    failure_recorded,
    finish_processing_job,
    infrastructure_retries,
    load_collection,
    merge_parameters,
    publish_processing_event,
    record_processing_job,
)
from prefect_beamline.flows.compute import task_runner_for
from pydantic import BaseModel, ConfigDict, Field

from prefect_beamline.analysis.mx import (
    GridCentre,
    ImageResult,
    estimate_d_min,
    find_grid_centre,
)
from prefect_beamline.events import CollectionEvent, GridScan
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.lims import CollectionDescription, GridResult, ImageQuality

RECIPE_PREFIX = "mx"


class MXParameters(BaseModel):
    """Spot-finding and compute settings; the Prefect UI shows these as a form."""

    model_config = ConfigDict(extra="forbid")

    gain: float = Field(1.0, gt=0, description="Detector gain (ADU per photon)")
    sigma_background: float = Field(
        6.0, gt=0, description="Dispersion threshold for background (DIALS sigma_background)"
    )
    sigma_strong: float = Field(
        3.0, gt=0, description="Strong-pixel threshold above local mean (DIALS sigma_strong)"
    )
    kernel_size: int = Field(
        3, ge=1, le=20, description="Half-width k of the (2k+1)² local window, pixels"
    )
    min_local: int = Field(2, ge=2, description="Fewest valid pixels a window must hold")
    global_threshold: float = Field(0.0, ge=0, description="Counts a strong pixel must exceed")
    min_spot_size: int = Field(2, ge=1, description="Smallest spot, pixels (rejects hot pixels)")
    max_spot_size: int = Field(1000, ge=1, description="Largest spot, pixels")
    images_per_chunk: int = Field(
        10, ge=1, le=1000, description="Images per task: the unit of retry, cache and fan-out"
    )
    parallel_chunks: int = Field(
        2, ge=1, le=256, description="Chunks analysed at once on the thread runner"
    )
    threads_per_chunk: int = Field(1, ge=1, le=256, description="Kernel threads per chunk")
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); empty: local threads"
    )
    compute_block: str | None = Field(
        None, description="Name of a Dask Compute block to run chunks on (wins over threads)"
    )

    def dispersion(self) -> DispersionParameters:
        return DispersionParameters(
            gain=self.gain,
            sigma_background=self.sigma_background,
            sigma_strong=self.sigma_strong,
            kernel_size=self.kernel_size,
            min_local=self.min_local,
            global_threshold=self.global_threshold,
        )


def effective_parameters(
    announced: CollectionEvent | None, chosen: MXParameters | None
) -> MXParameters:
    """DAQ-announced overrides, then the ones chosen for this run (UI, CLI) on top."""
    return merge_parameters(MXParameters, announced, chosen)


def data_signature(master_file: str) -> str:
    """Size and mtime of the master and its data files: part of each chunk's cache key.

    A rewritten collection gets new keys, so stale chunk results are never reused.
    """
    master = Path(master_file)
    stem = master.name.removesuffix("_master.h5")
    files = [master, *sorted(master.parent.glob(f"{stem}_data_*.h5"))]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def image_chunks(first: int, last: int, images_per_chunk: int) -> Iterator[tuple[int, int]]:
    """Inclusive (first, last) image ranges covering first..last."""
    for start in range(first, last + 1, images_per_chunk):
        yield start, min(start + images_per_chunk - 1, last)


@task(
    task_run_name="find-spots-{first}-{last}",
    cache_policy=INPUTS,
    cache_expiration=CHUNK_CACHE_EXPIRATION,
    persist_result=True,
    **infrastructure_retries(),
)
def find_spots_in_images(
    master_file: str,
    signature: str,
    first: int,
    last: int,
    parameters: MXParameters,
) -> list[ImageResult]:
    """Spot count, integrated spot intensity and resolution for images first..last.

    Streams one frame at a time, so memory stays at one frame whatever the chunk size.
    """
    dispersion = parameters.dispersion()
    results: list[ImageResult] = []
    with NXmxCollection(master_file) as collection:
        valid = collection.valid_pixels
        geometry = collection.geometry
        for chunk_start, frames in collection.iter_chunks(first, last, chunk_size=1):
            spots = find_spots(
                frames[0],
                valid,
                dispersion,
                min_spot_size=parameters.min_spot_size,
                max_spot_size=parameters.max_spot_size,
                n_threads=parameters.threads_per_chunk,
            )
            d_spacings = geometry.resolution_angstrom(spots.x, spots.y)
            results.append(
                ImageResult(
                    image_number=chunk_start,
                    n_spots=len(spots),
                    total_intensity=float(spots.intensity.sum()),
                    d_min_angstrom=estimate_d_min(d_spacings),
                )
            )
    return results


@task
def count_images(collection: CollectionDescription) -> tuple[int, int]:
    """The image range to analyse: the announced one, else all images in the file."""
    if collection.image_range is not None:
        return collection.image_range
    with NXmxCollection(collection.data_files[0]) as data:
        return 1, data.n_images


@flow(name="mx-spot-finding", log_prints=True)
def analyse_images(
    master_file: str, first: int, last: int, parameters: MXParameters
) -> list[ImageResult]:
    """Fan chunks of images out over the task runner, reporting progress as they finish."""
    signature = data_signature(master_file)
    chunks = list(image_chunks(first, last, parameters.images_per_chunk))
    progress = create_progress_artifact(0.0, description="Images analysed (%)")
    assert isinstance(progress, UUID)
    futures = [
        find_spots_in_images.submit(master_file, signature, start, end, parameters)
        for start, end in chunks
    ]
    results: list[ImageResult] = []
    for done, future in enumerate(as_completed(futures), start=1):
        results.extend(future.result())
        update_progress_artifact(progress, 100.0 * done / len(futures))
    get_run_logger().info("analysed %d images in %d chunks", len(results), len(chunks))
    return sorted(results, key=lambda result: result.image_number)


def summarise(results: Sequence[ImageResult], grid_centre: GridCentre | None) -> dict[str, Any]:
    """The collection-level numbers published in the completion event and summary.json."""
    n_spots = np.array([r.n_spots for r in results])
    resolutions = [r.d_min_angstrom for r in results if r.d_min_angstrom is not None]
    return {
        "n_images": len(results),
        "n_spots_total": int(n_spots.sum()),
        "n_spots_median": float(np.median(n_spots)) if len(results) else 0.0,
        "images_with_spots": int(np.count_nonzero(n_spots)),
        "best_d_min_angstrom": min(resolutions) if resolutions else None,
        "grid_centre": asdict(grid_centre) if grid_centre else None,
    }


@task
def locate_crystal(
    results: Sequence[ImageResult], grid: GridScan | None, first_image: int
) -> GridCentre | None:
    """For a grid scan, where the crystal diffracts best; None for other collections."""
    if grid is None:
        return None
    counts = np.array([r.n_spots for r in results])
    return find_grid_centre(grid, counts, first_image_number=first_image)


@task(**infrastructure_retries())
def write_mx_results(
    job: JobRecord,
    results: Sequence[ImageResult],
    summary: dict[str, Any],
    grid: GridScan | None,
) -> list[tuple[Path, str]]:
    """per_image.csv, summary.json and the plot, in the job's results folder."""
    folder = job.results_dir
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "per_image.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ImageResult.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    summary_file = folder / "summary.json"
    summary_file.write_text(json.dumps(summary, indent=2))
    plot = folder / ("grid_heatmap.png" if grid else "spots_per_image.png")
    centre = summary.get("grid_centre")
    plot.write_bytes(plot_png(results, grid, (centre["x"], centre["y"]) if centre else None))
    return [(table, "Result"), (summary_file, "Result"), (plot, "Graph")]


def plot_png(
    results: Sequence[ImageResult],
    grid: GridScan | None,
    centre_xy: tuple[float, float] | None = None,
) -> bytes:
    # matplotlib is imported here, not at module import: flow runs start ~0.4 s sooner.
    from prefect_beamline.plots import grid_heatmap_png, spots_per_image_png

    counts = np.array([r.n_spots for r in results])
    if grid is not None and counts.size == grid.steps_x * grid.steps_y:
        return grid_heatmap_png(grid, counts, centre_xy)
    return spots_per_image_png([r.image_number for r in results], counts)


@task(**infrastructure_retries())
def record_mx_results(
    job: JobRecord,
    results: Sequence[ImageResult],
    grid_centre: GridCentre | None,
    lims_block: str | None,
) -> None:
    """ImageQualityIndicators rows (one per image) and the grid result, idempotently."""
    from prefect_beamline.flows.common import open_lims

    lims = open_lims(lims_block)
    lims.record_image_quality(
        job.program_id,
        job.data_collection_id,
        [
            ImageQuality(
                image_number=r.image_number,
                n_spots=r.n_spots,
                total_intensity=r.total_intensity,
                d_min_angstrom=r.d_min_angstrom,
            )
            for r in results
        ],
    )
    if grid_centre is not None:
        lims.record_grid_result(
            job.program_id,
            job.data_collection_id,
            GridResult(
                x=grid_centre.x,
                y=grid_centre.y,
                box_min_x=grid_centre.box_min_x,
                box_min_y=grid_centre.box_min_y,
                box_max_x=grid_centre.box_max_x,
                box_max_y=grid_centre.box_max_y,
                max_count=grid_centre.max_count,
                status="success",
            ),
        )


@task
def publish_mx_artifacts(
    collection: CollectionDescription,
    results: Sequence[ImageResult],
    summary: dict[str, Any],
    plot_file: Path,
) -> None:
    """A per-image table and a markdown report with the plot, for the Prefect UI."""
    key = f"mx-dc{collection.collection_id}"
    create_table_artifact(
        key=f"{key}-per-image",
        table=[asdict(r) for r in results],
        description=f"Per-image spot finding, data collection {collection.collection_id}",
    )
    image = base64.b64encode(plot_file.read_bytes()).decode()
    centre = summary["grid_centre"]
    lines = [
        f"# MX spot finding: dc{collection.collection_id} ({collection.beamline}, "
        f"{collection.visit})",
        "",
        "| images | spots | images with spots | best d_min (Å) |",
        "|---|---|---|---|",
        f"| {summary['n_images']} | {summary['n_spots_total']} | "
        f"{summary['images_with_spots']} | {summary['best_d_min_angstrom'] or '–'} |",
        "",
    ]
    if centre:
        lines += [
            f"**X-ray centre** (grid steps): x = {centre['x']:.2f}, y = {centre['y']:.2f}; "
            f"box x {centre['box_min_x']}–{centre['box_max_x']}, "
            f"y {centre['box_min_y']}–{centre['box_max_y']}",
            "",
        ]
    lines.append(f"![{plot_file.name}](data:image/png;base64,{image})")
    create_markdown_artifact(key=f"{key}-report", markdown="\n".join(lines))


@flow(name="mx-processing", log_prints=True)
def process_mx(
    collection_id: int,
    parameters: MXParameters | None = None,
    collection: CollectionEvent | None = None,
    triggered_by: str = "",
    lims_block: str | None = None,
) -> dict[str, Any]:
    """Per-image spot finding for an MX collection, and the X-ray centre of a grid scan.

    Args:
        collection_id: LIMS dataCollectionId; a manual rerun needs only this.
        parameters: spot-finding settings; fields left out keep their defaults or the
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
        program="spot finding (dispersion)",
    )
    with failure_recorded(description, job, lims_block):
        first, last = count_images(description)
        runner = task_runner_for(
            chosen.dask_scheduler, chosen.compute_block, chosen.parallel_chunks
        )
        results = analyse_images.with_options(task_runner=runner)(
            description.data_files[0], first, last, chosen
        )
        grid_centre = locate_crystal(results, description.grid, first)
        summary = summarise(results, grid_centre)
        files = write_mx_results(job, results, summary, description.grid)
        record_mx_results(job, results, grid_centre, lims_block)
        attach_result_files(job, files, lims_block)
        publish_mx_artifacts(description, results, summary, files[-1][0])
    finish_processing_job(
        job, success=True, message=f"{summary['n_images']} images analysed", lims_block=lims_block
    )
    summary = {
        **summary,
        "results_dir": str(job.results_dir),
        "processing_job_id": job.processing_job_id,
    }
    publish_processing_event(description, job, summary)
    return summary
