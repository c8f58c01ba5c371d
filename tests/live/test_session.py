"""A live session: every frame's result as the offline flow computes it, the grid centre
once the last result is in, a bounded backlog, and no frame lost without a word."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_beamline.events import GridScan
from prefect_beamline.ext.spotfind import DispersionParameters, find_spots
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.formats.raw_chunks import RawFrame, RawFrameReader, encode_bslz4
from prefect_beamline.live.analysis import FrameAnalyser, SpotSettings
from prefect_beamline.live.inputs import collection_setup, follow_swmr
from prefect_beamline.live.session import LiveSession
from prefect_beamline.live.swmr import replay_with_swmr
from prefect_beamline.techniques.mx.analysis import find_grid_centre
from prefect_beamline.techniques.mx.synth import SyntheticCollection, write_mx_collection
from tests.helpers import Recorder

GRID = GridScan(steps_x=5, steps_y=4, dx_um=20, dy_um=20, snaked=True)


@pytest.fixture(scope="module")
def grid_scan(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCollection:
    return write_mx_collection(
        tmp_path_factory.mktemp("grid"), shape=(128, 160), grid=GRID, spots_per_image=30
    )


def offline_results(master: Path) -> dict[int, tuple[int, float]]:
    """Per-image (spots, intensity) as the offline flow's chunk task computes them:
    frames read through HDF5's filter, the same spot finder."""
    results = {}
    with NXmxCollection(master) as collection:
        for number, frames in collection.iter_chunks(1, collection.n_images, chunk_size=1):
            spots = find_spots(frames[0], collection.valid_pixels, DispersionParameters())
            results[number] = (len(spots), float(spots.intensity.sum()))
    return results


def session_for(master: Path, recorder: Recorder, **options: Any) -> LiveSession:
    geometry, valid, n_images = collection_setup(master)
    return LiveSession(
        FrameAnalyser(geometry, valid, SpotSettings()),
        n_images=n_images,
        grid=GRID,
        publisher=recorder,  # type: ignore[arg-type]
        **options,
    )


def test_live_results_and_centre_match_the_offline_flow(
    tmp_path: Path, grid_scan: SyntheticCollection
) -> None:
    target = tmp_path / "live"
    writer = threading.Thread(
        target=replay_with_swmr, args=(grid_scan.master_file, target), kwargs={"rate_hz": 100}
    )
    writer.start()
    recorder = Recorder()
    while not (target / grid_scan.master_file.name).is_file():
        time.sleep(0.01)
    session = session_for(target / grid_scan.master_file.name, recorder, n_workers=2)
    follow_swmr(target / grid_scan.master_file.name, session)
    summary = session.finish()
    writer.join()
    expected = offline_results(grid_scan.master_file)
    assert {n: (q.n_spots, q.total_intensity) for n, q in summary.results.items()} == expected
    counts = np.array([expected[n][0] for n in sorted(expected)])
    assert summary.centre == find_grid_centre(GRID, counts)
    types = [message["type"] for message in recorder.messages]
    assert types.count("image") == 20
    assert types[-2:] == ["centre", "end"]  # the centre follows the last image's result
    centre = recorder.messages[-2]["centre"]
    assert centre == dataclasses.asdict(summary.centre)


def test_a_full_backlog_blocks_the_producer_and_loses_nothing(
    grid_scan: SyntheticCollection,
) -> None:
    recorder = Recorder()
    session = session_for(grid_scan.master_file, recorder, n_workers=1, max_backlog=2)
    slow = session.analysis.analyser.analyse

    def slow_analyse(raw: RawFrame) -> Any:
        time.sleep(0.02)
        return slow(raw)

    session.analysis.analyser.analyse = slow_analyse  # type: ignore[method-assign]
    with RawFrameReader(grid_scan.master_file) as reader:
        for raw in reader.iter_frames(1, 20):
            session.submit(raw)
            assert session.analysis.backlog <= 4  # queue (2) + in hand (1) + being put (1)
    summary = session.finish()
    assert sorted(summary.results) == list(range(1, 21))
    assert summary.blocked_s > 0.1
    assert max(message.get("backlog_images", 0) for message in recorder.messages) >= 1


def test_a_frame_that_fails_is_reported_and_the_centre_names_it(
    grid_scan: SyntheticCollection,
) -> None:
    recorder = Recorder()
    session = session_for(grid_scan.master_file, recorder)
    with RawFrameReader(grid_scan.master_file) as reader:
        for raw in reader.iter_frames(1, 20):
            if raw.image_number == 7:
                raw = dataclasses.replace(raw, chunk=raw.chunk[:100])
            session.submit(raw)
    summary = session.finish()
    assert summary.failed == [7] and len(summary.results) == 19
    failed = [m for m in recorder.messages if m["type"] == "status"]
    assert failed[0]["failed_image"] == 7 and "image 7" in failed[0]["error"]
    centre = next(m for m in recorder.messages if m["type"] == "centre")
    assert centre["missing_images"] == [7]


def test_the_live_plot_is_republished_as_results_come(grid_scan: SyntheticCollection) -> None:
    from types import SimpleNamespace

    from prefect_beamline.flows.live import LivePlot

    published: list[list[int]] = []
    job = SimpleNamespace(data_collection_id=7)
    plot = LivePlot(
        job,  # type: ignore[arg-type]
        interval_s=0.0,
        publish=lambda _job, images: published.append([q.image_number for q in images]),
    )
    session = session_for(grid_scan.master_file, Recorder(), on_result=[plot.add])
    with RawFrameReader(grid_scan.master_file) as reader:
        session.submit(reader.read(1))
        deadline = time.monotonic() + 30
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
        assert published == [[1]]  # the plot of the first result, before any other frame
        for number in range(2, 21):
            session.submit(reader.read(number))
    session.finish()
    plot.close()
    assert published[-1] == list(range(1, 21))
    assert all(len(after) >= len(before) for before, after in itertools.pairwise(published))


@pytest.mark.parametrize("compressed", [True, False])
def test_overflowed_pixels_are_masked_and_counted_live_as_offline(
    grid_scan: SyntheticCollection, compressed: bool
) -> None:
    """The live analyser passed no count limit to the spot finder: an Eiger's overflow
    value (2^32 - 1) was summed as signal, and its result is what the finished run
    reuses; the offline chunks mask it (issue 11)."""
    geometry, valid, _ = collection_setup(grid_scan.master_file)
    with NXmxCollection(grid_scan.master_file) as collection:
        frame = next(collection.iter_chunks(1, 1, chunk_size=1))[1][0].astype(np.uint32)
        limit = collection.max_valid_value
    y, x = np.unravel_index(np.argmax(np.where(valid, frame, 0)), frame.shape)
    frame[y, x] = frame[y, x + 1] = np.iinfo(np.uint32).max
    chunk = encode_bslz4(frame) if compressed else frame.tobytes()
    raw = RawFrame(1, chunk, compressed, frame.shape, frame.dtype, where="frame 1")
    quality = FrameAnalyser(geometry, valid, SpotSettings()).analyse(raw)
    expected = find_spots(frame, valid, DispersionParameters(), max_valid=limit)
    assert quality.n_overloads == expected.n_overloads == 2
    assert quality.total_intensity == pytest.approx(float(expected.intensity.sum()))
    assert quality.total_intensity < 1e6
