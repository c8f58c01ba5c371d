"""Serial crystallography: hits, peaks and radial profiles of every frame, hit rate per
chunk as it finishes, hits written for CrystFEL.

The flow a DAQ's `finished` event starts for a jet or chip collection (see
`prefect.yaml`), and the one a scientist reruns from the UI with changed parameters.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from pydantic import Field

from prefect_beamline.ext.arguments import available_cores
from prefect_beamline.ext.peakfinder import PeakFinderParameters
from prefect_beamline.flows.common import (
    CHUNK_CACHE_EXPIRATION,
    Job,
    infrastructure_retries,
    open_job,
    technique_flow,
)
from prefect_beamline.flows.compute import configured_compute, where_this_runs
from prefect_beamline.flows.live import (
    BeamlineLive,
    follow_configured_input,
    open_live_job,
    results_publisher,
)
from prefect_beamline.flows.mx import count_images, data_signature, image_chunks
from prefect_beamline.flows.rerun import (
    NO_CHANGES,
    Announcement,
    CollectionId,
    LimsBlock,
    ScienceParameters,
    TriggeredBy,
)
from prefect_beamline.formats.nxmx import DetectorGeometry, NXmxCollection
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.metrics import timed_chunk
from prefect_beamline.techniques.ssx import crystfel, records, report
from prefect_beamline.techniques.ssx.analysis import (
    ChunkHitRate,
    ChunkResult,
    SerialAnalyser,
    SerialSettings,
    SerialSummary,
    analyse_chunk,
    join_chunks,
    summarise,
)
from prefect_beamline.techniques.ssx.live import (
    ChunkRateWriter,
    SerialLiveSession,
    SerialLiveSummary,
)


class SSXParameters(ScienceParameters):
    """Hit-finding and integration settings; the Prefect UI shows these as a form."""

    min_snr: float = Field(6.0, ge=0, description="Peak pixels exceed ring mean + min_snr·sigma")
    adc_threshold: float = Field(2.0, ge=0, description="Peak pixels exceed this many counts")
    n_iterations: int = Field(5, ge=1, le=20, description="Sigma-clipping rounds per ring")
    min_pix: int = Field(2, ge=1, description="Smallest peak, pixels (rejects hot pixels)")
    max_pix: int = Field(200, ge=1, description="Largest peak, pixels (rejects ice blobs)")
    local_max_radius: int = Field(
        2, ge=0, le=20, description="A peak's brightest pixel is the largest within this, pixels"
    )
    min_res_px: int = Field(10, ge=0, description="Inner radius peaks may lie at, pixels")
    max_res_px: int = Field(100_000, ge=1, description="Outer radius peaks may lie at, pixels")
    max_peaks: int = Field(2048, ge=1, le=100_000, description="Peaks stored per frame (CXI)")
    min_peaks: int = Field(10, ge=1, description="A frame with this many peaks is a hit")
    n_bins: int = Field(1000, ge=1, le=65535, description="Radial bins of the profiles")
    unit: Literal["q_nm^-1", "2th_deg"] = Field("q_nm^-1", description="Radial unit")
    polarization_factor: float | None = Field(
        0.99, ge=-1, le=1, description="Beam polarisation (pyFAI's factor); none: no correction"
    )
    frames_per_chunk: int = Field(
        100, ge=1, le=10_000, description="Frames per task: the unit of retry, cache and hit rate"
    )

    def settings(self) -> SerialSettings:
        """The analysis's settings: the fields the kernels name alike."""
        peak_fields = PeakFinderParameters.__dataclass_fields__
        peaks = PeakFinderParameters(**self.model_dump(include=set(peak_fields)))
        return SerialSettings(
            peaks=peaks,
            min_peaks=self.min_peaks,
            n_bins=self.n_bins,
            unit=self.unit,
            polarization_factor=self.polarization_factor,
        )


@functools.lru_cache(maxsize=4)
def analyser_for(master_file: str, signature: str, settings: SerialSettings) -> SerialAnalyser:
    """Ring map and integration matrix of a collection: built once per process."""
    with NXmxCollection(master_file) as data:
        return SerialAnalyser.build(data.geometry, data.valid_pixels, settings)


@task(
    task_run_name="find-hits-{first}-{last}",
    # Kernel threads do not change the result: a rerun on other compute reuses the chunk.
    cache_policy=INPUTS - "n_threads",
    cache_expiration=CHUNK_CACHE_EXPIRATION,
    persist_result=True,
    **infrastructure_retries(),
)
@timed_chunk("ssx")
def find_hits_in_frames(
    master_file: str,
    signature: str,
    first: int,
    last: int,
    parameters: SSXParameters,
    n_threads: int = 1,
) -> ChunkResult:
    """Peaks, hits and the radial profile of frames first..last.

    Reads `n_threads` frames at a time (frames run in parallel in the kernels), so memory
    stays at a few frames whatever the chunk size.
    """
    get_run_logger().info("frames %d-%d on %s", first, last, where_this_runs())
    analyser = analyser_for(master_file, signature, parameters.settings())
    parts: list[ChunkResult] = []
    with NXmxCollection(master_file) as data:
        for start, frames in data.iter_chunks(first, last, chunk_size=max(1, n_threads)):
            parts.append(analyse_chunk(analyser, frames, start, n_threads=n_threads))
    return join_chunks(parts)


def analyse_frames(
    runner: TaskRunner[Any],
    job: Job,
    first: int,
    last: int,
    parameters: SSXParameters,
    n_threads: int = 1,
) -> list[ChunkResult]:
    """Fan chunks out over `runner` inside the collection's own run (no subflow); record
    each chunk's hit rate as it finishes."""
    master_file = job.collection.data_files[0]
    signature = data_signature(master_file)
    chunks = list(image_chunks(first, last, parameters.frames_per_chunk))
    progress = create_progress_artifact(0.0, description="Frames analysed (%)")
    assert isinstance(progress, UUID)
    futures = [
        runner.submit(
            find_hits_in_frames,
            {
                "master_file": master_file,
                "signature": signature,
                "first": start,
                "last": end,
                "parameters": parameters,
                "n_threads": n_threads,
            },
        )
        for start, end in chunks
    ]
    results: list[ChunkResult] = []
    for done, future in enumerate(as_completed(futures), start=1):
        chunk = future.result()
        results.append(chunk)
        record_chunk_hit_rate(job, ChunkHitRate.of(chunk))
        update_progress_artifact(progress, 100.0 * done / len(futures))
    return results


@task(**infrastructure_retries())
def record_chunk_hit_rate(job: Job, chunk: ChunkHitRate) -> None:
    """The chunk's hit rate in the LIMS as soon as it is known (SSXChunkHitRate)."""
    lims = job.lims()
    records.record_chunk_hit_rates(lims, job.program_id, job.data_collection_id, [chunk])
    get_run_logger().info(
        "frames %d-%d: %d/%d hits (%.1f %%)",
        chunk.first_image,
        chunk.last_image,
        chunk.n_hits,
        chunk.n_frames,
        100.0 * chunk.hit_rate,
    )


def find_hits_on_every_frame(
    job: Job, first: int, last: int, parameters: SSXParameters
) -> list[ChunkResult]:
    """`analyse_frames` where the Compute block says: its runner, its kernel threads."""
    compute = configured_compute()
    with compute.task_runner() as runner:
        return analyse_frames(runner, job, first, last, parameters, compute.threads_per_chunk)


@task
def summarise_collection(
    chunks: list[ChunkResult], collection: CollectionDescription, parameters: SSXParameters
) -> SerialSummary:
    """Hit list, hit rate and summed profiles of the whole collection."""
    signature = data_signature(collection.data_files[0])
    analyser = analyser_for(collection.data_files[0], signature, parameters.settings())
    return summarise(chunks, analyser.integrator.radial, analyser.integrator.unit)


@task(**infrastructure_retries())
def write_ssx_results(
    job: Job, chunks: list[ChunkResult], summary: SerialSummary
) -> list[tuple[Path, str]]:
    """per_frame.csv, radial_profiles.h5, summary.json and plots in the results folder."""
    ordered = sorted(chunks, key=lambda chunk: chunk.first)
    profiles = np.concatenate([chunk.profiles for chunk in ordered])
    return report.write_result_files(job.results_dir, summary, profiles)


@task(**infrastructure_retries())
def write_crystfel_files(job: Job, chunks: list[ChunkResult]) -> list[tuple[Path, str]]:
    """hits.cxi (hit frames + peak tables), hits.lst and detector.geom for CrystFEL."""
    ordered = sorted(chunks, key=lambda chunk: chunk.first)
    hits = join_chunks(ordered).hit_peaks
    numbers = [int(n) for chunk in ordered for n in chunk.hit_image_numbers()]
    folder = job.results_dir
    with NXmxCollection(job.collection.data_files[0]) as data:
        dtype = data.read_frames(1, 1).dtype
        frames = (data.read_frames(number, number)[0] for number in numbers)
        cxi = crystfel.write_cxi(
            folder / crystfel.CXI_FILE, frames, numbers, hits, data.geometry.image_shape, dtype
        )
        geom = crystfel.write_geometry(folder / crystfel.GEOMETRY_FILE, data.geometry)
    events = crystfel.write_event_list(folder / crystfel.LIST_FILE, cxi, len(numbers))
    return [(cxi, "Result"), (events, "Result"), (geom, "Result")]


@task(**infrastructure_retries())
def record_ssx_results(job: Job, summary: SerialSummary) -> None:
    """SSXDataCollection and this program's SSXProcessingResult, idempotently."""
    records.record_ssx_result(
        job.lims(), job.program_id, job.data_collection_id, summary, job.collection.experiment_type
    )


@task
def publish_ssx_report(job: Job, summary: SerialSummary, files: list[tuple[Path, str]]) -> None:
    """The chunk table and a markdown report with the plots, for the Prefect UI."""
    plots = [path for path, file_type in files if file_type == "Graph"]
    report.publish_artifacts(job.collection, summary, plots)


@technique_flow("ssx-processing")
def process_ssx(
    collection_id: CollectionId,
    parameters: SSXParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Hit finding and radial profiles of a serial collection; CXI hits for CrystFEL."""
    job = open_job(
        collection_id,
        collection,
        parameters,
        model=SSXParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="hit finding (peakfinder8), azimuthal integration",
    )
    chosen = job.settings(SSXParameters)
    with job.failure_recorded():
        first, last = count_images(job.collection)
        chunks = find_hits_on_every_frame(job, first, last, chosen)
        summary = summarise_collection(chunks, job.collection, chosen)
        files = write_ssx_results(job, chunks, summary)
        files += write_crystfel_files(job, chunks)
        record_ssx_results(job, summary)
        publish_ssx_report(job, summary, files)
        stats = summary.as_dict()
        message = f"{stats['n_hits']} hits in {stats['n_frames']} frames"
        return job.finish(stats, message=message, files=files)


# -- live: hit rate while the detector runs -----------------------------------------------


def _live_session(
    job: Job,
    config: BeamlineLive,
    parameters: SSXParameters,
    geometry: DetectorGeometry,
    valid: np.ndarray,
    n_images: int,
) -> SerialLiveSession:
    return SerialLiveSession(
        SerialAnalyser.build(geometry, valid, parameters.settings()),
        n_images=n_images,
        frames_per_chunk=parameters.frames_per_chunk,
        publisher=results_publisher(config, job.data_collection_id),
        lims_writer=ChunkRateWriter(job.lims(), job.program_id, job.data_collection_id),
        n_threads=config.workers or available_cores(),
        max_backlog=config.max_backlog,
    )


def run_live_ssx(job: Job, config: BeamlineLive, parameters: SSXParameters) -> SerialLiveSummary:
    """Follow the configured input (as live MX: SWMR files, Stream V2 or images_ready
    events) until every frame of the collection is analysed."""
    return follow_configured_input(
        job,
        config,
        lambda geometry, valid, n: _live_session(job, config, parameters, geometry, valid, n),
    ).finish()


@technique_flow(
    "ssx-live",
    more_arguments="""
    Runs only for beamlines named in the Prefect Variable `beamline-live` (flows/live.py).
    """,
)
def live_ssx(
    collection_id: CollectionId,
    parameters: SSXParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Live hit finding while the detector runs: peaks per frame and the hit rate per
    chunk to the results stream and the LIMS as they happen."""
    opened = open_live_job(
        collection_id,
        collection,
        parameters,
        model=SSXParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="hit finding (peakfinder8), live",
    )
    if opened is None:
        return {"live": "off"}
    job, config = opened
    chosen = job.settings(SSXParameters)
    with job.failure_recorded():
        summary = run_live_ssx(job, config, chosen)
    n_hits = sum(chunk.n_hits for chunk in summary.chunks)
    stats = {
        "live": config.input,
        "n_results": len(summary.n_peaks),
        "n_hits": n_hits,
        "n_chunks": len(summary.chunks),
        "failed_images": summary.failed,
    }
    return job.finish(
        stats, message=f"live: {n_hits} hits in {len(summary.n_peaks)} frames analysed"
    )
