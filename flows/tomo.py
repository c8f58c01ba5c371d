"""Tomography: normalisation, ring removal, centre of rotation, filtered back projection.

The flow a DAQ's `finished` event starts for a tomography scan (NXtomo or Data Exchange,
see `prefect.yaml`), and the one a scientist reruns from the UI with another centre,
ring filter or slice range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner
from pydantic import Field, field_validator

from prefect_beamline.ext.backproject import FilterName, reconstruct
from prefect_beamline.ext.gridrec import reconstruct_fourier
from prefect_beamline.ext.tomo_preprocess import normalise, ring_filter
from prefect_beamline.flows.common import (
    CHUNK_CACHE_EXPIRATION,
    Job,
    infrastructure_retries,
    open_job,
    technique_flow,
)
from prefect_beamline.flows.compute import configured_compute, where_this_runs
from prefect_beamline.flows.rerun import (
    NO_CHANGES,
    Announcement,
    CollectionId,
    LimsBlock,
    ScienceParameters,
    TriggeredBy,
)
from prefect_beamline.formats.nxtomo import TomoScan
from prefect_beamline.metrics import timed_chunk
from prefect_beamline.techniques.tomo import records, report
from prefect_beamline.techniques.tomo.analysis import (
    CentreEstimate,
    ScanInfo,
    TomogramRecord,
    candidate_centres,
    centre_by_sinogram_metric,
    centre_from_opposite_projections,
    opposite_pair,
    summarise,
)
from prefect_beamline.techniques.tomo.staging import StagedRows, needs_staging, stage_rows
from prefect_beamline.techniques.tomo.volume import VolumeWriter

VOLUME_FILE = "volume.h5"
ReconstructionMethod = Literal["gridrec", "fbp"]
# Chunks in flight per chunk the Compute block runs at once: each finished chunk is
# written while the next ones compute.
IN_FLIGHT_PER_PARALLEL_CHUNK = 2


class TomoParameters(ScienceParameters):
    """Reconstruction settings; the Prefect UI shows these as a form.

    Science only: where the chunks run is the Compute block's business, so a DAQ that
    sends `dask_scheduler` or the like is refused (extra="forbid").
    """

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
    method: ReconstructionMethod = Field(
        "gridrec",
        description="gridrec: Fourier-domain (gridding) reconstruction, O(N² log N) per "
        "slice; fbp: the exact back projector, O(N² x angles), the reference "
        "(docs/tomography.md compares them)",
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
    cache_chunks: bool = Field(
        True,
        description="Keep each chunk's slices in Prefect's result storage (14 days), so a "
        "retried or identical rerun reuses them; costs as much disk as the volume",
    )

    @field_validator("ring_filter_width")
    @classmethod
    def _odd(cls, width: int) -> int:
        if width % 2 == 0:
            raise ValueError(f"ring_filter_width must be odd, got {width}")
        return width


@task(**infrastructure_retries())
def inspect_scan(scan_file: str) -> ScanInfo:
    """Open the scan, check its layout and fields, and note its size and angles."""
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
    with TomoScan(scan.path) as data:
        flat, dark = data.flat_and_dark(first, stop)
        pair = opposite_pair(np.asarray(scan.angles_deg))
        if pair is not None:
            sinograms = normalise(data.read_projections(list(pair))[:, first:stop], flat, dark)
            centre = centre_from_opposite_projections(sinograms[:, 0, :], sinograms[:, 1, :])
            return CentreEstimate(round(centre, 3), "0/180 pair")
        middle = (first + stop) // 2
        sinogram = normalise(
            data.read_rows(middle, middle + 1),
            flat[middle - first : middle - first + 1],
            dark[middle - first : middle - first + 1],
        )[0]
    candidates = candidate_centres(scan.n_columns, parameters.centre_search_radius)
    return CentreEstimate(
        round(centre_by_sinogram_metric(sinogram, candidates), 3), "sinogram metric"
    )


@task(**infrastructure_retries())
def stage_sinograms(
    scan: ScanInfo, rows: tuple[int, int], rows_per_task: int, results_dir: Path
) -> StagedRows | None:
    """When the scan's storage chunks are taller than a chunk task's rows, copy the rows
    to reconstruct into the job's folder, reading the scan once, so each task reads only
    its rows (techniques/tomo/staging.py); None when the scan can be read in place."""
    with TomoScan(scan.path) as data:
        if not needs_staging(data, rows_per_task):
            return None
        return stage_rows(data, *rows, rows_per_task, results_dir)


@task(
    task_run_name="reconstruct-rows-{first_row}-{stop_row}",
    # Kernel threads do not change the slices, nor does where the rows are read from (the
    # scan or its staged copy): a rerun on other compute reuses the chunk.
    cache_policy=INPUTS - "n_threads" - "staged",
    cache_expiration=CHUNK_CACHE_EXPIRATION,
    persist_result=True,
    **infrastructure_retries(),
)
@timed_chunk("tomo")
def reconstruct_rows(
    scan_file: str,
    signature: str,
    first_row: int,
    stop_row: int,
    centre: float,
    parameters: TomoParameters,
    n_threads: int = 1,
    staged: StagedRows | None = None,
) -> np.ndarray:
    """Slices (row, y, x) of detector rows first_row..stop_row-1: normalise, remove
    rings, and reconstruct by the chosen method. Reads only those rows' sinograms, from
    the `staged` copy if the flow made one."""
    get_run_logger().info("rows %d-%d on %s", first_row, stop_row - 1, where_this_runs())
    offset = staged.first_row if staged else 0
    with TomoScan(staged.path if staged else scan_file) as scan:
        first, stop = first_row - offset, stop_row - offset
        flat, dark = scan.flat_and_dark(first, stop)
        sinograms = normalise(scan.read_rows(first, stop), flat, dark, n_threads=n_threads)
        angles = scan.angles_rad
    if parameters.ring_filter:
        ring_filter(sinograms, width=parameters.ring_filter_width, n_threads=n_threads)
    method = reconstruct_fourier if parameters.method == "gridrec" else reconstruct
    return method(
        sinograms, angles, centre, filter_name=parameters.filter_name, n_threads=n_threads
    )


def reconstruct_volume(
    runner: TaskRunner[Any],
    scan: ScanInfo,
    rows: tuple[int, int],
    centre: CentreEstimate,
    parameters: TomoParameters,
    results_dir: Path,
    in_flight: int = 2,
    n_threads: int = 1,
) -> TomogramRecord:
    """Fan chunks of slices out over `runner` and write each into the volume as it
    finishes; the volume gets its final name only when every slice is in. Inside the
    collection's own run, not a subflow: one run per collection in the runs list, its
    progress on it.

    At most `in_flight` chunks are submitted at a time: each finished chunk is written
    and dropped before the next is submitted, so memory holds a few chunks, never the
    volume. A chunk that fails (after its retries) fails the run and removes the
    partial volume.
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
    chunk_task = (
        reconstruct_rows
        if parameters.cache_chunks
        else reconstruct_rows.with_options(cache_policy=NO_CACHE, persist_result=False)
    )
    staged = stage_sinograms(scan, rows, parameters.slices_per_chunk, results_dir)
    with (
        removed_after(staged),
        VolumeWriter(results_dir / VOLUME_FILE, shape, first_row=first, process=process) as out,
    ):
        waiting = iter(chunks)
        submitted: dict[PrefectFuture[np.ndarray], int] = {}

        def submit_next() -> None:
            chunk = next(waiting, None)
            if chunk is not None:
                future = runner.submit(
                    chunk_task,
                    {
                        "scan_file": scan.path,
                        "signature": scan.signature,
                        "first_row": chunk[0],
                        "stop_row": chunk[1],
                        "centre": centre.centre,
                        "parameters": parameters,
                        "n_threads": n_threads,
                        "staged": staged,
                    },
                )
                submitted[future] = chunk[0]

        for _ in range(in_flight):
            submit_next()
        done = 0
        while submitted:
            finished = next(as_completed(list(submitted)))
            out.write(submitted.pop(finished) - first, finished.result())
            del finished
            done += 1
            update_progress_artifact(progress, 100.0 * done / len(chunks))
            submit_next()
    get_run_logger().info("reconstructed %d slices in %d chunks", shape[0], len(chunks))
    return TomogramRecord(
        volume_file=str(out.path),
        size_x=scan.n_columns,
        size_y=scan.n_columns,
        size_z=shape[0],
        centre_of_rotation=centre.centre,
        centre_method=centre.method,
    )


@contextmanager
def removed_after(staged: StagedRows | None) -> Iterator[None]:
    """Delete the staged rows when the volume is written, or has failed."""
    try:
        yield
    finally:
        if staged is not None:
            Path(staged.path).unlink(missing_ok=True)


def reconstruct_on_compute(
    scan: ScanInfo,
    rows: tuple[int, int],
    centre: CentreEstimate,
    parameters: TomoParameters,
    job: Job,
) -> TomogramRecord:
    """`reconstruct_volume` where the Compute block says: its runner, its parallel
    chunks, its kernel threads."""
    compute = configured_compute()
    in_flight = IN_FLIGHT_PER_PARALLEL_CHUNK * compute.chunks_at_once
    with compute.task_runner() as runner:
        return reconstruct_volume(
            runner,
            scan,
            rows,
            centre,
            parameters,
            job.results_dir,
            in_flight,
            compute.threads_per_chunk,
        )


@task(**infrastructure_retries())
def write_previews(job: Job, tomogram: TomogramRecord) -> TomogramRecord:
    """PNGs of the three orthogonal planes through the volume's centre."""
    return report.write_previews(job.results_dir, tomogram)


@task(**infrastructure_retries())
def write_tomo_summary(
    job: Job, summary: dict[str, Any], tomogram: TomogramRecord
) -> list[tuple[Path, str]]:
    """summary.json; returns every result file with its ISPyB attachment type."""
    return report.write_summary(job.results_dir, summary, tomogram)


@task(**infrastructure_retries())
def record_tomogram(job: Job, tomogram: TomogramRecord) -> None:
    """The Tomogram row: volume path, size, centre and previews (idempotent)."""
    lims = job.lims()
    records.record_tomogram(lims, job.program_id, job.data_collection_id, tomogram)


@task
def publish_tomo_report(job: Job, summary: dict[str, Any], tomogram: TomogramRecord) -> None:
    """A summary table and a markdown report with the three previews, for the Prefect UI."""
    report.publish_artifacts(job.collection, summary, tomogram)


@technique_flow("tomo-processing")
def process_tomo(
    collection_id: CollectionId,
    parameters: TomoParameters = NO_CHANGES,
    collection: Announcement = None,
    triggered_by: TriggeredBy = "",
    lims_block: LimsBlock = None,
) -> dict[str, Any]:
    """Reconstruct a tomography scan into a volume, with previews and LIMS rows."""
    job = open_job(
        collection_id,
        collection,
        parameters,
        model=TomoParameters,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program="tomographic reconstruction (gridrec or filtered back projection)",
    )
    chosen = job.settings(TomoParameters)
    with job.failure_recorded():
        scan = inspect_scan(job.collection.data_files[0])
        rows = slice_range(scan, chosen)
        centre = find_centre(scan, rows, chosen)
        tomogram = reconstruct_on_compute(scan, rows, centre, chosen, job)
        tomogram = write_previews(job, tomogram)
        summary = summarise(
            scan,
            rows,
            tomogram,
            filter_name=chosen.filter_name,
            ring_filter=chosen.ring_filter,
            method=chosen.method,
        )
        files = write_tomo_summary(job, summary, tomogram)
        record_tomogram(job, tomogram)
        publish_tomo_report(job, summary, tomogram)
        return job.finish(
            summary,
            message=f"{tomogram.size_z} slices reconstructed, "
            f"centre {tomogram.centre_of_rotation:.2f} px",
            files=files,
        )
