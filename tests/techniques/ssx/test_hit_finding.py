"""Hit classification on synthetic serial data with known hits: recall and precision of
hits, peaks per hit against the spots written, positions of the peaks, and the per-chunk
hit rate the live path reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_beamline.ext.peakfinder import PeakFinderParameters
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.techniques.ssx.analysis import (
    ChunkHitRate,
    ChunkResult,
    SerialAnalyser,
    SerialSettings,
    analyse_chunk,
    join_chunks,
    summarise,
)
from prefect_beamline.techniques.ssx.synth import SyntheticSerial, write_serial_collection

# Peaks found on a hit: at least this fraction of the spots written (the weakest
# synthetic spots, 40 photons spread over ~10 pixels, sit at the threshold), never more.
PEAKS_PER_HIT_FRACTION = 0.85
POSITION_TOLERANCE_PX = 1.0  # weak spots: centroid of a few noisy pixels


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSerial:
    return write_serial_collection(
        tmp_path_factory.mktemp("ssx") / "data", n_frames=120, hit_fraction=0.3, seed=4
    )


@pytest.fixture(scope="module")
def chunks(collection: SyntheticSerial) -> list[ChunkResult]:
    with NXmxCollection(collection.master_file) as data:
        analyser = SerialAnalyser.build(
            data.geometry, data.valid_pixels, SerialSettings(PeakFinderParameters())
        )
        return [
            analyse_chunk(analyser, frames, first, n_threads=2)
            for first, frames in data.iter_chunks(chunk_size=25)
        ]


def test_hit_recall_and_precision_are_at_least_095(
    collection: SyntheticSerial, chunks: list[ChunkResult]
) -> None:
    found = join_chunks(chunks).hit
    truth = collection.is_hit
    true_positives = int((found & truth).sum())
    assert truth.sum() > 20 and (~truth).sum() > 60  # both classes are well represented
    assert true_positives / truth.sum() >= 0.95
    assert true_positives / found.sum() >= 0.95


def test_peaks_per_hit_are_within_tolerance_of_the_spots_written(
    collection: SyntheticSerial, chunks: list[ChunkResult]
) -> None:
    joined = join_chunks(chunks)
    for image_number in np.flatnonzero(collection.is_hit) + 1:
        written = len(collection.spots[image_number])
        found = int(joined.n_peaks[image_number - 1])
        assert PEAKS_PER_HIT_FRACTION * written <= found <= written, image_number


def test_every_peak_of_a_hit_lies_on_a_spot_written(
    collection: SyntheticSerial, chunks: list[ChunkResult]
) -> None:
    joined = join_chunks(chunks)
    for row, image_number in enumerate(joined.hit_image_numbers()):
        peaks = joined.hit_peaks.peaks(row)
        spots = collection.spots[int(image_number)]
        distance = np.hypot(
            peaks[:, None, 0] - spots[None, :, 0], peaks[:, None, 1] - spots[None, :, 1]
        ).min(axis=1)
        assert distance.max() < POSITION_TOLERANCE_PX, image_number


def test_chunk_hit_rates_and_summary_agree(chunks: list[ChunkResult]) -> None:
    rates = [ChunkHitRate.of(chunk) for chunk in chunks]
    assert [rate.first_image for rate in rates] == [1, 26, 51, 76, 101]
    summary = summarise(list(reversed(chunks)), np.arange(1000.0), "q_nm^-1")
    assert summary.n_hits == sum(rate.n_hits for rate in rates)
    assert summary.n_frames == 120
    assert summary.hits_profile.shape == (1000,)
    assert summary.as_dict()["hit_rate"] == pytest.approx(summary.n_hits / 120)
    assert (summary.hit_image_numbers() == join_chunks(chunks).hit_image_numbers()).all()


def test_hits_scatter_more_than_blanks_in_the_summed_profiles(
    chunks: list[ChunkResult],
) -> None:
    summary = summarise(chunks, np.arange(1000.0), "q_nm^-1")
    mean_hit = summary.hits_profile / summary.n_hits
    mean_blank = summary.blanks_profile / (summary.n_frames - summary.n_hits)
    assert mean_hit.sum() > mean_blank.sum()


def test_synthetic_writer_refuses_an_empty_collection(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_frames and frames_per_data_file must be at least 1"):
        write_serial_collection(tmp_path, n_frames=0)
