"""MX per-image analysis: spot finding on every image, resolution, grid-scan X-ray centre.

The flow a DAQ's `finished` event starts for a rotation or grid-scan collection (see
`prefect.yaml`), and the one a scientist reruns from the UI with changed parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS
from prefect.futures import as_completed
from pydantic import Field

from prefect_beamline.events import GridScan
from prefect_beamline.ext.spotfind import DispersionParameters, find_spots
from prefect_beamline.flows.common import (
    CHUNK_CACHE_EXPIRATION,
    Job,
    infrastructure_retries,
    open_job,
    technique_flow,
)
from prefect_beamline.flows.compute import configured_compute, where_this_runs
from prefect_beamline.flows.live import (
    LIVE_RECIPE,
    adopt_live_job,
    open_live_job,
    publish_live_plot,
    reuse_live_results,
    run_live,
)
from prefect_beamline.flows.rerun import (
    NO_CHANGES,
    Announcement,
    CollectionId,
    LimsBlock,
    ScienceParameters,
    TriggeredBy,
)
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.formats.shared import OpenCollection, shared_reader
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.metrics import timed_chunk
from prefect_beamline.techniques.mx import records, report
from prefect_beamline.techniques.mx.analysis import (
    GridResult,
    ImageQuality,
    estimate_d_min,
    find_grid_centre,
    n_spots_per_image,
    summarise,
)


class MXParameters(ScienceParameters):
    """Spot-finding settings; the Prefect UI shows these as a form.

    Science only: where the chunks run is the Compute block's business, so a DAQ that
    sends `dask_scheduler` or the like is refused (extra="forbid").
    """

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
    images_per_chunk: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Images per task: the unit of retry, cache and fan-out. Empty: sized "
        "by the frame, about 40 Mpixel per chunk (10 to 100 images)",
    )

    def dispersion(self) -> DispersionParameters:
        """The kernel's threshold settings: the fields both models name alike."""
        names = {field.name for field in dataclasses.fields(DispersionParameters)}
        return DispersionParameters(**self.model_dump(include=names))


def data_signature(master_file: str) -> str:
    """Size and mtime of the master and its data files: part of each chunk's cache key.

    A rewritten collection gets new keys, so stale chunk results are never reused.
    """
    master = Path(master_file)
    stem = master.name.removesuffix("_master.h5")
    files = [master, *sorted(master.parent.glob(f"{stem}_data_*.h5"))]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


# A Prefect task costs ~3-14 ms of its own on 2 cores (engine, state events, stored
# result: issue 17), and spot finding ~3 ms per Mpixel: ~40 Mpixel of frames per chunk
# keeps Prefect's share under ~10 %. At 10 images or more, big frames keep the chunks
# they had.
CHUNK_PIXELS = 40_000_000
CHUNK_IMAGES = (10, 100)


def images_per_chunk(parameters: MXParameters, image_shape: tuple[int, ...]) -> int:
    """The parameter when set; else as many images as make ~CHUNK_PIXELS, within
    CHUNK_IMAGES (few enough per chunk that progress and retries stay fine-grained)."""
    if parameters.images_per_chunk is not None:
        return parameters.images_per_chunk
    fewest, most = CHUNK_IMAGES
    return max(fewest, min(most, math.ceil(CHUNK_PIXELS / math.prod(image_shape))))


def image_chunks(first: int, last: int, images_per_chunk: int) -> Iterator[tuple[int, int]]:
    """Inclusive (first, last) image ranges covering first..last."""
    for start in range(first, last + 1, images_per_chunk):
        yield start, min(start + images_per_chunk - 1, last)


def count_images(collection: CollectionDescription) -> tuple[int, int]:
    """The image range to analyse: the announced one, else all images in the file.

    Plain functions here and below, not tasks: each Prefect task costs the server three
    state events, and a burst of collections is bound by the server (issue 17). Tasks
    are kept for the units worth retrying or caching: chunks, files, LIMS writes."""
    if collection.image_range is not None:
        return collection.image_range
    with NXmxCollection(collection.data_files[0]) as data:
        return 1, data.n_images


@task(
    task_run_name="find-spots-{first}-{last}",
    # Kernel threads do not change the result: a rerun on other compute reuses the chunk.
    cache_policy=INPUTS - "n_threads",
    cache_expiration=CHUNK_CACHE_EXPIRATION,
    persist_result=True,
    **infrastructure_retries(),
)
@timed_chunk("mx")
def find_spots_in_images(
    master_file: str,
    signature: str,
    first: int,
    last: int,
    parameters: MXParameters,
    n_threads: int = 1,
) -> list[ImageQuality]:
    """Spot count, integrated spot intensity and resolution for images first..last.

    Streams one frame at a time, so memory stays at one frame whatever the chunk size.
    Pixels above the collection's `max_valid_value` (overflow 2^n - 1, beyond
    saturation) are masked frame by frame and counted in `n_overloads`.
    """
    get_run_logger().info("images %d-%d on %s", first, last, where_this_runs())
    # The run holds its collection open while its chunks run: mask and geometry are read
    # once per run, not once per chunk (prefect_beamline/formats/shared.py).
    with shared_reader(master_file, signature) as collection:
        return spots_on_images(collection, first, last, parameters, n_threads)


def spots_on_images(
    collection: OpenCollection, first: int, last: int, parameters: MXParameters, n_threads: int
) -> list[ImageQuality]:
    """A chunk's compute: images first..last of an open collection, one frame at a time."""
    dispersion = parameters.dispersion()
    geometry = collection.geometry
    results: list[ImageQuality] = []
    for image_number, frame in collection.frames(first, last):
        spots = find_spots(
            frame,
            collection.valid_pixels,
            dispersion,
            max_valid=collection.max_valid_value,
            min_spot_size=parameters.min_spot_size,
            max_spot_size=parameters.max_spot_size,
            n_threads=n_threads,
        )
        results.append(
            ImageQuality(
                image_number=image_number,
                n_spots=len(spots),
                total_intensity=float(spots.intensity.sum()),
                d_min_angstrom=estimate_d_min(geometry.resolution_angstrom(spots.x, spots.y)),
                n_overloads=spots.n_overloads,
            )
        )
    return results


def chunk_progress(n_chunks: int) -> UUID | None:
    """A progress bar in the UI for a collection of several chunks; a one-chunk
    collection is done in about a second, and the bar would only cost API calls."""
    if n_chunks < 2:
        return None
    progress = create_progress_artifact(0.0, description="Images analysed (%)")
    assert isinstance(progress, UUID)
    return progress


def find_spots_on_every_image(
    collection: CollectionDescription, first: int, last: int, parameters: MXParameters
) -> list[ImageQuality]:
    """Fan chunks of images out where the Compute block says, reporting progress.

    Inside the collection's own flow run, not a subflow: a subflow is one more flow run
    the server must create, and in a burst of collections that creation waited 10-67 s
    on a busy server (issue 17). The run holds the collection open meanwhile, so chunks
    computing in this process share one reader.
    """
    compute = configured_compute()
    master_file = collection.data_files[0]
    signature = data_signature(master_file)
    results: list[ImageQuality] = []
    with shared_reader(master_file, signature) as held, compute.task_runner() as runner:
        size = images_per_chunk(parameters, held.geometry.image_shape)
        chunks = list(image_chunks(first, last, size))
        progress = chunk_progress(len(chunks))
        futures = [
            runner.submit(
                find_spots_in_images,
                {
                    "master_file": master_file,
                    "signature": signature,
                    "first": start,
                    "last": end,
                    "parameters": parameters,
                    "n_threads": compute.threads_per_chunk,
                },
            )
            for start, end in chunks
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            results.extend(future.result())
            if progress is not None:
                update_progress_artifact(progress, 100.0 * done / len(futures))
    get_run_logger().info("analysed %d images in %d chunks", len(results), len(chunks))
    return sorted(results, key=lambda result: result.image_number)


def locate_crystal(
    images: Sequence[ImageQuality], grid: GridScan | None, first_image: int
) -> GridResult | None:
    """For a grid scan, where the crystal diffracts best; None for other collections."""
    if grid is None:
        return None
    return find_grid_centre(grid, n_spots_per_image(images), first_image_number=first_image)


@task(**infrastructure_retries())
def write_mx_results(
    job: Job, images: Sequence[ImageQuality], summary: dict[str, Any]
) -> list[tuple[Path, str]]:
    """per_image.csv, summary.json and the plot, in the job's results folder."""
    return report.write_result_files(job.results_dir, images, summary, job.collection.grid)


@task(**infrastructure_retries())
def record_mx_results(
    job: Job, images: Sequence[ImageQuality], grid_result: GridResult | None
) -> None:
    """ImageQualityIndicators rows (one per image) and the grid result, idempotently."""
    lims = job.lims()
    records.record_image_quality(lims, job.program_id, job.data_collection_id, images)
    if grid_result is not None:
        records.record_grid_result(lims, job.program_id, job.data_collection_id, grid_result)


@task(**infrastructure_retries())
def publish_xray_centre(job: Job, grid_result: GridResult | None) -> None:
    """A grid scan's X-ray centre on RabbitMQ for dodal's ZocaloResults, for the
    beamlines in `zocalo_xrc_beamlines`."""
    from prefect_beamline.zocalo.results import publish_configured

    collection = job.collection
    publish_configured(job.lims(), collection.beamline, job.data_collection_id, grid_result)


def publish_mx_report(
    job: Job,
    images: Sequence[ImageQuality],
    summary: dict[str, Any],
    files: list[tuple[Path, str]],
) -> None:
    """A per-image table and a markdown report with the plot, for the Prefect UI."""
    plot_file = next(path for path, file_type in files if file_type == "Graph")
    report.publish_artifacts(job.collection, images, summary, plot_file)


@technique_flow("mx-processing")
def process_mx(
    collection_id: CollectionId,
    parameters: MXParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Per-image spot finding for an MX collection, and the X-ray centre of a grid scan."""
    # The live run's job, when the collection had one: its results are reused (flows/live).
    job = adopt_live_job(collection_id, collection, lims_block) or open_job(
        collection_id,
        collection,
        parameters,
        model=MXParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="spot finding (dispersion)",
    )
    chosen = job.settings(MXParameters)
    with job.failure_recorded():
        first, last = count_images(job.collection)
        images: list[ImageQuality] = []
        missing = [(first, last)]
        if job.recipe == LIVE_RECIPE:
            images, missing = reuse_live_results(job, first, last)
        for start, end in missing:  # all images without a live run; a lost frame with one
            images += find_spots_on_every_image(job.collection, start, end, chosen)
        images.sort(key=lambda image: image.image_number)
        grid_result = locate_crystal(images, job.collection.grid, first)
        summary = summarise(images, grid_result)
        # The plot draws on a thread while the LIMS rows are written: off the critical path.
        written = write_mx_results.submit(job, images, summary)
        record_mx_results(job, images, grid_result)
        if job.collection.grid is not None:
            publish_xray_centre(job, grid_result)
        files = written.result()
        publish_mx_report(job, images, summary, files)
        return job.finish(summary, f"{summary['n_images']} images analysed", files)


@technique_flow(
    "mx-live",
    more_arguments="""
    Runs only for beamlines named in the Prefect Variable `beamline-live` (flows/live.py).
    """,
)
def live_mx(
    collection_id: CollectionId,
    parameters: MXParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Live spot finding while the detector runs; results to the LIMS and the DAQ."""
    logger = get_run_logger()
    opened = open_live_job(
        collection_id,
        collection,
        parameters,
        model=MXParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="spot finding (dispersion), live",
    )
    if opened is None:
        return {"live": "off"}
    job, config = opened
    chosen = job.settings(MXParameters)
    with job.failure_recorded():
        summary = run_live(job, config, chosen)
        publish_live_plot(job, summary.images())
    logger.info(
        "live: %d images, %d failed, centre %s",
        len(summary.results),
        len(summary.failed),
        summary.centre,
    )
    return {
        "live": config.input,
        "processing_job_id": job.processing_job_id,
        "n_results": len(summary.results),
        "failed_images": summary.failed,
        "centre_after_last_frame_s": summary.centre_after_last_frame_s,
    }
