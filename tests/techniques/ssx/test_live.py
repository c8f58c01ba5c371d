"""Serial crystallography live: a collection written with SWMR, followed as live MX is,
gives each frame's peaks and each chunk's hit rate as the offline chunks compute them,
on the results stream as the chunks finish (not at the end) and in the LIMS."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_beamline.ext.peakfinder import PeakFinderParameters
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.formats.raw_chunks import RawFrameReader
from prefect_beamline.lims import Lims
from prefect_beamline.live.inputs import collection_setup, follow_swmr
from prefect_beamline.live.swmr import replay_with_swmr
from prefect_beamline.techniques.ssx import records
from prefect_beamline.techniques.ssx.analysis import (
    ChunkHitRate,
    ChunkResult,
    SerialAnalyser,
    SerialSettings,
    analyse_chunk,
)
from prefect_beamline.techniques.ssx.live import ChunkRateWriter, SerialLiveSession
from prefect_beamline.techniques.ssx.synth import SyntheticSerial, write_serial_collection
from tests.helpers import DC, Recorder
from tests.techniques.ssx.test_records import ssx_program

CHUNK = 8
SETTINGS = SerialSettings(PeakFinderParameters())


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSerial:
    return write_serial_collection(
        tmp_path_factory.mktemp("ssx-live") / "data",
        n_frames=28,
        frames_per_data_file=10,
        hit_fraction=0.4,
        seed=7,
    )


def offline_chunks(master: Path) -> list[ChunkResult]:
    with NXmxCollection(master) as data:
        analyser = SerialAnalyser.build(data.geometry, data.valid_pixels, SETTINGS)
        return [
            analyse_chunk(analyser, frames, first)
            for first, frames in data.iter_chunks(chunk_size=CHUNK)
        ]


def session_for(master: Path, recorder: Recorder, **options: Any) -> SerialLiveSession:
    geometry, valid, n_images = collection_setup(master)
    return SerialLiveSession(
        SerialAnalyser.build(geometry, valid, SETTINGS),
        n_images=n_images,
        frames_per_chunk=CHUNK,
        publisher=recorder,
        **options,
    )


def test_live_hit_rates_match_the_offline_chunks_and_reach_stream_and_lims_as_they_happen(
    tmp_path: Path, collection: SyntheticSerial
) -> None:
    lims = Lims(f"sqlite:///{tmp_path / 'lims.db'}")
    lims.create_schema()
    program = ssx_program(lims)
    target = tmp_path / "live"
    writer = threading.Thread(
        target=replay_with_swmr, args=(collection.master_file, target), kwargs={"rate_hz": 40}
    )
    writer.start()
    while not (target / collection.master_file.name).is_file():
        time.sleep(0.01)
    master = target / collection.master_file.name
    recorder = Recorder()
    lims_writer = ChunkRateWriter(lims, program, DC, interval_s=0.01)
    session = session_for(master, recorder, lims_writer=lims_writer, n_threads=2)
    follow_swmr(master, session)
    summary = session.finish()
    writer.join()

    offline = offline_chunks(collection.master_file)
    expected = [ChunkHitRate.of(chunk) for chunk in offline]
    assert sum(rate.n_hits for rate in expected) >= 5  # hits and blanks in every test run
    peaks = np.concatenate([chunk.n_peaks for chunk in offline])
    assert summary.n_peaks == {n + 1: int(count) for n, count in enumerate(peaks)}
    assert summary.failed == []
    fields = ("first_image", "last_image", "n_frames", "n_hits", "hit_rate", "mean_peaks_per_hit")
    assert [[getattr(c, f) for f in fields] for c in summary.chunks] == [
        [getattr(c, f) for f in fields] for c in expected
    ]
    rates = recorder.of_type("hit_rate")
    assert [[m[f] for f in fields] for m in rates] == [
        [getattr(c, f) for f in fields] for c in expected
    ]
    radial = SerialAnalyser.build(*collection_setup(master)[:2], SETTINGS).integrator.radial
    for message, chunk in zip(rates, offline, strict=True):
        np.testing.assert_allclose(
            message["mean_profile"], chunk.profiles.mean(axis=0), rtol=1e-4, atol=1e-6
        )
        axis = message["radial_first"] + message["radial_step"] * np.arange(radial.size)
        np.testing.assert_allclose(axis, radial, rtol=1e-9)
    images = recorder.of_type("image")
    assert [m["n_peaks"] for m in sorted(images, key=lambda m: m["image_number"])] == list(peaks)
    assert recorder.messages[-1]["type"] == "end"
    written = records.chunk_hit_rates(lims, program)
    assert [(c.first_image, c.n_hits, c.hit_rate) for c in written] == [
        (c.first_image, c.n_hits, c.hit_rate) for c in expected
    ]
    lims.close()


def test_a_chunk_rate_goes_out_before_the_next_frames_and_a_corrupt_frame_is_named(
    collection: SyntheticSerial,
) -> None:
    recorder = Recorder()
    session = session_for(collection.master_file, recorder)
    with RawFrameReader(collection.master_file) as reader:
        frames = list(reader.iter_frames(1, collection.n_frames))
    frames[2] = dataclasses.replace(frames[2], chunk=frames[2].chunk[:100])  # image 3
    for raw in frames[:CHUNK]:
        session.submit(raw)
    deadline = time.monotonic() + 30.0
    while not recorder.of_type("hit_rate") and time.monotonic() < deadline:
        time.sleep(0.01)
    first = recorder.of_type("hit_rate")  # out while the rest of the collection is to come
    assert [(m["first_image"], m["n_frames"], m["failed_images"]) for m in first] == [
        (1, CHUNK - 1, [3])
    ]
    for raw in frames[CHUNK:]:
        session.submit(raw)
    summary = session.finish()
    assert summary.failed == [3] and len(summary.n_peaks) == collection.n_frames - 1
    status = recorder.of_type("status")
    assert status[0]["failed_image"] == 3 and "image 3" in status[0]["error"]
    assert len(recorder.of_type("hit_rate")) == len(range(0, collection.n_frames, CHUNK))
