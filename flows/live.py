"""MX live analysis: one long-lived flow run per collection, from `started` to its last image.

The DAQ's `started` event runs the flow `live_mx` of flows/mx.py (deployment `mx-live`),
which calls what this module holds. It opens the
collection's one LIMS job, then analyses every frame as it arrives, from the input the
beamline's live configuration names (the Prefect Variable `beamline-live`, set by the
facility, never by the DAQ): files written with SWMR, the detector's Stream V2, or
`images_ready` events. Results go to the LIMS and the gateway's results stream as they
come, and a grid scan's X-ray centre as soon as the last image's result is in. The
`finished` event's `mx-processing` run then adopts this job and reuses its results
(`adopt_live_job`, `reuse_live_results`): one collection, one job, one set of results.

Why a flow per collection and not a background task per frame: a frame costs ~10-40 ms
of kernel time; a Prefect task costs ~5 ms on threads and a background task ~124 ms from
submit to running (measured here), plus an API write per state change: at 560 Hz that is
thousands of task runs a second against the server. A per-collection run pays Prefect's
start-up once and keeps geometry, mask and kernels warm; scale-out is one run per
collection on as many workers, with frames split between runs by the stream's PUSH
round robin (Stream V2) or by image ranges.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.variables import Variable
from pydantic import BaseModel, ConfigDict, Field

from prefect_beamline.events import CollectionEvent
from prefect_beamline.ext.arguments import available_cores
from prefect_beamline.flows.common import Job, open_job
from prefect_beamline.formats.nxmx import DetectorGeometry
from prefect_beamline.live.analysis import FrameAnalyser, SpotSettings
from prefect_beamline.live.inputs import (
    Session,
    SessionFactory,
    collection_setup,
    follow_images_ready,
    follow_stream,
    follow_swmr,
)
from prefect_beamline.live.session import CentreHook, LiveSession, LiveSummary
from prefect_beamline.live.sinks import BatchingSink, LimsResultsWriter, ResultsStreamPublisher
from prefect_beamline.live.stream2 import Stream2Consumer
from prefect_beamline.settings import get_settings
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.analysis import ImageQuality
from prefect_beamline.techniques.mx.report import grid_heatmap_png, spots_per_image_png

if TYPE_CHECKING:
    from prefect_beamline.flows.mx import MXParameters

LIVE_VARIABLE = "beamline-live"
LIVE_RECIPE = "mx-live"


class BeamlineLive(BaseModel):
    """One beamline's live path, as the facility configures it (Variable `beamline-live`,
    a JSON object keyed by beamline name)."""

    model_config = ConfigDict(extra="forbid")

    input: Literal["swmr", "stream", "events"] = Field(
        description="swmr: watch the files; stream: the detector's Stream V2; "
        "events: the DAQ's images_ready announcements"
    )
    stream_endpoint: str | None = Field(
        None, description="ZeroMQ endpoint of the detector's Stream V2, e.g. tcp://eiger:31001"
    )
    detector_distance_mm: float | None = Field(
        None, gt=0, description="Stream V2 only: distance when no master file is written"
    )
    workers: int = Field(0, ge=0, description="Analysis threads; 0: every core")
    max_backlog: int = Field(32, ge=1, description="Frames queued before the input waits")
    results_url: str | None = Field(
        None, description="Gateway receiving the results; default the local gateway"
    )


def live_configuration(beamline: str) -> BeamlineLive | None:
    """The beamline's live configuration, None when its live path is off."""
    configured: Any = Variable.get(LIVE_VARIABLE, default={})
    entry = configured.get(beamline) if isinstance(configured, dict) else None
    return BeamlineLive.model_validate(entry) if entry is not None else None


def open_live_job(
    collection_id: int,
    collection: CollectionEvent | None,
    parameters: BaseModel,
    *,
    model: type[BaseModel],
    triggered_by: str,
    lims_block: str | None,
    program: str,
) -> tuple[Job, BeamlineLive] | None:
    """A live flow's start: its beamline's live configuration and the collection's job;
    None (logged) when the beamline's live path is off."""
    if collection is None:
        raise ValueError("live analysis starts from the DAQ's started event (collection)")
    config = live_configuration(collection.beamline)
    if config is None:
        get_run_logger().info(
            "live path off for beamline %s (Variable %s)", collection.beamline, LIVE_VARIABLE
        )
        return None
    job = open_job(
        collection_id,
        collection,
        parameters,
        model=model,
        triggered_by=triggered_by,
        lims_block=lims_block,
        program=program,
    )
    return job, config


CENTRE_HOOKS_GROUP = "prefect_beamline.centre_hooks"


def centre_hooks(job: Job) -> list[CentreHook]:
    """Hooks called with a grid scan's centre as soon as it is known, one per installed
    entry point of the group `prefect_beamline.centre_hooks`: each names a factory
    `make_hook(job) -> hook(centre, images)`. The facility bridge registers its RabbitMQ
    publisher (dodal's ZocaloResults shape) here; nothing is installed by default."""
    from importlib.metadata import entry_points

    return [point.load()(job) for point in entry_points(group=CENTRE_HOOKS_GROUP)]


def results_publisher(config: BeamlineLive, collection_id: int) -> ResultsStreamPublisher:
    settings = get_settings()
    url = config.results_url or f"http://127.0.0.1:{settings.gateway_port}"
    token = settings.operator_token.get_secret_value() if settings.operator_token else None
    return ResultsStreamPublisher(url, collection_id, token)


def _session(
    job: Job,
    config: BeamlineLive,
    parameters: MXParameters,
    geometry: DetectorGeometry,
    valid: Any,
    n_images: int,
    plot: LivePlot,
) -> LiveSession:
    settings = SpotSettings(
        parameters.dispersion(), parameters.min_spot_size, parameters.max_spot_size
    )
    return LiveSession(
        FrameAnalyser(geometry, valid, settings),
        n_images=n_images,
        grid=job.collection.grid,
        publisher=results_publisher(config, job.data_collection_id),
        lims_writer=LimsResultsWriter(job.lims(), job.program_id, job.data_collection_id),
        on_centre=centre_hooks(job) if job.collection.grid is not None else (),
        on_result=[plot.add],
        n_workers=config.workers or available_cores(),
        max_backlog=config.max_backlog,
    )


def run_live(job: Job, config: BeamlineLive, parameters: MXParameters) -> LiveSummary:
    """Follow the configured input until every image of the collection is analysed;
    the live plot is republished as results come."""
    plot = LivePlot(job)
    try:
        return _follow_input(job, config, parameters, plot)
    finally:
        plot.close()


def _follow_input(
    job: Job, config: BeamlineLive, parameters: MXParameters, plot: LivePlot
) -> LiveSummary:
    return follow_configured_input(
        job,
        config,
        lambda geometry, valid, n: _session(job, config, parameters, geometry, valid, n, plot),
    ).finish()


def follow_configured_input(
    job: Job, config: BeamlineLive, make_session: SessionFactory[Session]
) -> Session:
    """The session `make_session` builds, fed from the beamline's configured input (a
    DECTRIS Stream V2, the SWMR files, or the DAQ's images_ready events) until every image
    of the collection is in; not yet finished. Every technique's live flow follows this."""
    master = Path(job.collection.data_files[0])
    if config.input == "stream":
        if not config.stream_endpoint:
            raise ValueError("beamline-live: input 'stream' needs stream_endpoint")
        distance = config.detector_distance_mm
        if distance is None:
            geometry, _, _ = collection_setup(master)
            distance = geometry.detector_distance_mm
        consumer = Stream2Consumer(config.stream_endpoint)
        try:
            return follow_stream(consumer, make_session, distance)
        finally:
            consumer.close()
    session = make_session(*collection_setup(master))
    if config.input == "swmr":
        follow_swmr(master, session)
    else:
        asyncio.run(follow_images_ready(master, job.data_collection_id, session))
    return session


def publish_live_plot(job: Job, images: Sequence[ImageQuality]) -> None:
    """The spots plot (a grid scan's heat map) as the run's `live-plot` artifact."""
    import base64

    import numpy as np

    n_spots = np.array([image.n_spots for image in images], dtype=np.int64)
    grid = job.collection.grid
    if grid is not None and n_spots.size == grid.steps_x * grid.steps_y:
        png = grid_heatmap_png(grid, n_spots)
    else:
        png = spots_per_image_png([image.image_number for image in images], n_spots)
    encoded = base64.b64encode(png).decode()
    create_markdown_artifact(
        f"**{len(images)} images analysed live**\n\n![spots](data:image/png;base64,{encoded})",
        key=f"live-plot-dc{job.data_collection_id}",
        description="Live spot finding",
    )


class LivePlot:
    """The `live-plot` artifact while the collection runs: republished with every result
    so far, at most every `interval_s`, on a thread of its own that runs in the flow
    run's context (so the artifact is the run's); the last update at `close`."""

    def __init__(
        self,
        job: Job,
        *,
        interval_s: float = 1.0,
        publish: Callable[[Job, Sequence[ImageQuality]], None] = publish_live_plot,
    ) -> None:
        self.job = job
        self.publish = publish
        self._images: dict[int, ImageQuality] = {}
        context = contextvars.copy_context()
        self._sink = BatchingSink(
            lambda batch: context.run(self._update, batch),
            interval_s=interval_s,
            name=f"live-plot-{job.data_collection_id}",
        )

    def _update(self, batch: list[ImageQuality]) -> None:
        for quality in batch:
            self._images[quality.image_number] = quality
        self.publish(self.job, [self._images[number] for number in sorted(self._images)])

    def add(self, quality: ImageQuality) -> None:
        self._sink.put(quality)

    def close(self) -> None:
        self._sink.close()


# -- what the end-of-collection flow reuses ----------------------------------------------


def adopt_live_job(
    collection_id: int, announced: CollectionEvent | None, lims_block: str | None
) -> Job | None:
    """The collection's live job (running or done), for `mx-processing` to complete
    instead of opening a second job; None when the collection had no live run."""
    from prefect_beamline.data_roots import require_data_files
    from prefect_beamline.flows.common import load_collection, open_lims, results_directory

    for summary in reversed(open_lims(lims_block).jobs_for_collection(collection_id)):
        if summary.recipe != LIVE_RECIPE or summary.program_id is None:
            continue
        if summary.program_status not in ("running", "success"):
            continue
        collection = load_collection(collection_id, announced, lims_block)
        require_data_files(collection.data_files, get_settings().data_roots, must_exist=True)
        return Job(
            collection,
            summary.processing_job_id,
            summary.program_id,
            LIVE_RECIPE,
            results_directory(collection, LIVE_RECIPE, summary.processing_job_id),
            lims_block,
            summary.parameters,
        )
    return None


@task
def reuse_live_results(
    job: Job, first: int, last: int, wait_s: float = 30.0
) -> tuple[list[ImageQuality], list[tuple[int, int]]]:
    """The live job's per-image rows in first..last, and the ranges still missing.

    Waits up to `wait_s` for the live run to record the last images (the `finished`
    event may overtake them); what is still missing then (a live worker killed
    mid-frame, a frame that failed) is analysed again by the caller.
    """
    deadline = time.monotonic() + wait_s
    while True:
        rows = {
            row.image_number: row
            for row in records.image_quality(job.lims(), job.program_id)
            if first <= row.image_number <= last
        }
        if len(rows) == last - first + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing: list[tuple[int, int]] = []
    for number in range(first, last + 1):
        if number in rows:
            continue
        if missing and missing[-1][1] == number - 1:
            missing[-1] = (missing[-1][0], number)
        else:
            missing.append((number, number))
    return [rows[number] for number in sorted(rows)], missing
