"""The live path on the embedded stack: a grid scan analysed while it is written (SWMR)
and while it is streamed (DECTRIS Stream V2), the DAQ following the gateway's results
stream; the `finished` event's flow reuses the live job.

The DAQ's `started` event runs the `mx-live` deployment through its automation; the
facility's live configuration is the Prefect Variable `beamline-live` on the server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_beamline.demo import daq_event, post_event
from prefect_beamline.events import CollectionEventKind, GridScan
from prefect_beamline.ext.spotfind import DispersionParameters, find_spots
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.formats.raw_chunks import RawFrameReader
from prefect_beamline.live.stream2 import SeriesHeader, Stream2Simulator
from prefect_beamline.live.swmr import replay_with_swmr
from prefect_beamline.stack import LocalStack, free_port
from prefect_beamline.techniques.mx import records
from prefect_beamline.techniques.mx.analysis import find_grid_centre
from prefect_beamline.techniques.mx.synth import SyntheticCollection, write_mx_collection
from tests.e2e.helpers import (
    DaqFollower,
    completed_run,
    configure_live,
    final_run,
    follow_while_written_with_swmr,
    next_collection_id,
)

pytestmark = pytest.mark.e2e
GRID = GridScan(steps_x=6, steps_y=4, dx_um=20, dy_um=20, snaked=True)


@pytest.fixture(scope="module")
def grid_scan(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCollection:
    return write_mx_collection(
        tmp_path_factory.mktemp("live-source"), shape=(160, 200), grid=GRID, spots_per_image=30
    )


def offline_centre(master: Path) -> dict[str, Any]:
    """The centre the offline flow computes: every frame through HDF5, the same kernels."""
    counts = []
    with NXmxCollection(master) as collection:
        for _, frames in collection.iter_chunks(1, collection.n_images, chunk_size=1):
            counts.append(
                len(find_spots(frames[0], collection.valid_pixels, DispersionParameters()))
            )
    centre = find_grid_centre(GRID, np.array(counts))
    assert centre is not None
    return {"x": centre.x, "y": centre.y, "max_count": centre.max_count}


def assert_every_image_then_the_centre(
    messages: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    kinds = [message["type"] for message in messages]
    images = sorted(m["image_number"] for m in messages if m["type"] == "image")
    assert images == list(range(1, GRID.steps_x * GRID.steps_y + 1))
    assert kinds.index("centre") > max(i for i, kind in enumerate(kinds) if kind == "image")
    assert kinds[-1] == "end"
    centre = next(m for m in messages if m["type"] == "centre")["centre"]
    assert centre["x"] == pytest.approx(expected["x"])
    assert centre["y"] == pytest.approx(expected["y"])
    assert centre["max_count"] == expected["max_count"]


def live_program(stack: LocalStack, collection_id: int) -> int:
    jobs = stack.lims.jobs_for_collection(collection_id)
    assert [job.recipe for job in jobs] == ["mx-live"]
    assert jobs[0].program_id is not None
    return jobs[0].program_id


def test_grid_scan_written_with_swmr_is_analysed_live_and_reused_at_the_end(
    stack: LocalStack, tmp_path: Path, grid_scan: SyntheticCollection
) -> None:
    collection_id = next_collection_id()
    configure_live(stack, "i03-swmr", {"input": "swmr", "workers": 1})
    expected = offline_centre(grid_scan.master_file)
    event = daq_event(
        "mx",
        collection_id,
        tmp_path / "data" / grid_scan.master_file.name,
        beamline="i03-swmr",
        visit="mx1-1",
        experiment_type="gridscan",
        grid=GRID,
        kind=CollectionEventKind.started,
    )
    messages = follow_while_written_with_swmr(stack, event, grid_scan.master_file, rate_hz=8)
    assert_every_image_then_the_centre(messages, expected)
    program = live_program(stack, collection_id)
    # The LIMS has every image before the DAQ says `finished`.
    assert len(records.image_quality(stack.lims, program)) == GRID.steps_x * GRID.steps_y
    assert completed_run(stack, "mx-live/mx-live", collection_id)

    post_event(
        stack,
        event.model_copy(
            update={"kind": CollectionEventKind.finished, "event_id": event.event_id + "-end"}
        ),
    )
    completed_run(stack, "mx-processing/mx-gridscan", collection_id)
    jobs = stack.lims.jobs_for_collection(collection_id)
    assert len(jobs) == 1 and jobs[0].program_status == "success"  # one job, completed
    stored = records.grid_result(stack.lims, program)
    assert stored is not None and stored.x == pytest.approx(expected["x"])


def test_grid_scan_streamed_over_stream_v2_is_analysed_from_memory(
    stack: LocalStack, tmp_path: Path, grid_scan: SyntheticCollection
) -> None:
    collection_id = next_collection_id()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    configure_live(
        stack,
        "i03-stream",
        {
            "input": "stream",
            "stream_endpoint": endpoint,
            "workers": 1,
            "detector_distance_mm": 200.0,
        },
    )
    expected = offline_centre(grid_scan.master_file)
    # The DAQ announces the master the filewriter wrote at arm; frames come only over ZeroMQ.
    target = tmp_path / "data"
    target.mkdir()
    master = target / grid_scan.master_file.name
    master.write_bytes(grid_scan.master_file.read_bytes())
    with (
        RawFrameReader(grid_scan.master_file) as reader,
        NXmxCollection(grid_scan.master_file) as nx,
    ):
        geometry, mask = nx.geometry, np.where(nx.valid_pixels, 0, 1).astype(np.uint32)
        frames = [(raw.decode(), raw.chunk) for raw in reader.iter_frames(1, reader.n_images)]
    header = SeriesHeader(
        series_id=1,
        series_unique_id=f"dc{collection_id}",
        number_of_images=len(frames),
        image_shape=geometry.image_shape,
        beam_center_x=geometry.beam_centre_x_px,
        beam_center_y=geometry.beam_centre_y_px,
        pixel_size_x_m=geometry.pixel_size_x_mm / 1000,
        pixel_size_y_m=geometry.pixel_size_y_mm / 1000,
        incident_wavelength_angstrom=geometry.wavelength_angstrom,
        saturation_value=geometry.saturation_value,
        pixel_mask=mask,
    )
    simulator = Stream2Simulator(endpoint)
    follower = DaqFollower(stack, collection_id)
    follower.start()
    post_event(
        stack,
        daq_event(
            "mx",
            collection_id,
            master,
            beamline="i03-stream",
            visit="mx2-1",
            experiment_type="gridscan",
            grid=GRID,
            kind=CollectionEventKind.started,
        ),
    )
    try:
        simulator.send_series(header, frames, rate_hz=20)  # blocks until the flow connects
        messages = follower.finish()
    finally:
        simulator.close()
    assert_every_image_then_the_centre(messages, expected)
    program = live_program(stack, collection_id)
    assert len(records.image_quality(stack.lims, program)) == len(frames)
    assert final_run(stack, "mx-live/mx-live", collection_id).state == "COMPLETED"


def test_images_ready_events_feed_the_same_live_analysis(
    stack: LocalStack, tmp_path: Path, grid_scan: SyntheticCollection
) -> None:
    collection_id = next_collection_id()
    configure_live(stack, "i03-events", {"input": "events", "workers": 1})
    expected = offline_centre(grid_scan.master_file)
    target = tmp_path / "data"
    master = target / grid_scan.master_file.name
    written: dict[int, float] = {}
    writer = threading.Thread(
        target=replay_with_swmr,
        args=(grid_scan.master_file, target),
        kwargs={"rate_hz": 12, "written_at": written},
    )
    writer.start()
    while not master.is_file():
        time.sleep(0.01)
    started = daq_event(
        "mx",
        collection_id,
        master,
        beamline="i03-events",
        visit="mx3-1",
        experiment_type="gridscan",
        grid=GRID,
        kind=CollectionEventKind.started,
    )
    follower = DaqFollower(stack, collection_id)
    follower.start()
    post_event(stack, started)
    announced = 0
    n_images = GRID.steps_x * GRID.steps_y
    while announced < n_images:  # the DAQ announces each batch of 6 images on disk
        if len(written) - announced >= 6 or (len(written) == n_images and announced < n_images):
            last = len(written)
            post_event(
                stack,
                started.model_copy(
                    update={
                        "kind": CollectionEventKind.images_ready,
                        "event_id": f"{started.event_id}-ready-{last}",
                        "image_range": (announced + 1, last),
                    }
                ),
            )
            announced = last
        time.sleep(0.05)
    writer.join()
    assert_every_image_then_the_centre(follower.finish(), expected)
    assert len(records.image_quality(stack.lims, live_program(stack, collection_id))) == n_images
