"""Spot finding on a synthetic Eiger collection recovers the planted spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_beamline.ext.spotfind import find_spots
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.synth import write_mx_collection

MATCH_RADIUS_PX = 2.0
MIN_SNR = 5.0


def test_recall_and_precision_for_spots_with_snr_at_least_5(tmp_path: Path) -> None:
    synthetic = write_mx_collection(tmp_path, n_images=6, spots_per_image=60, seed=21)
    true_positives = strong_truth = found_total = false_positives = 0
    with NXmxCollection(synthetic.master_file) as collection:
        for image_number, frames in collection.iter_chunks(chunk_size=1):
            spots = find_spots(frames[0], collection.valid_pixels)
            truth = [s for s in synthetic.spots if s.image_number == image_number]
            true_xy = np.array([(s.x, s.y) for s in truth])
            snr = np.array([s.snr for s in truth])
            found_xy = np.column_stack([spots.x, spots.y])
            distance = np.linalg.norm(found_xy[:, None, :] - true_xy[None, :, :], axis=2)
            nearest = distance.argmin(axis=1)
            matched = distance.min(axis=1) <= MATCH_RADIUS_PX
            strong = snr >= MIN_SNR
            recovered = np.zeros(len(truth), dtype=bool)
            recovered[nearest[matched]] = True
            true_positives += int((recovered & strong).sum())
            strong_truth += int(strong.sum())
            # Found spots matching a weak true spot are neither credit nor blame.
            counted = ~matched | strong[nearest]
            found_total += int(counted.sum())
            false_positives += int((~matched).sum())
    recall = true_positives / strong_truth
    precision = 1.0 - false_positives / found_total
    print(f"recall {recall:.3f} over {strong_truth} spots, precision {precision:.3f}")
    assert strong_truth > 150
    assert recall >= 0.95
    assert precision >= 0.95


@pytest.mark.parametrize("seed", [1, 2])
def test_hot_pixels_are_never_reported(tmp_path: Path, seed: int) -> None:
    synthetic = write_mx_collection(tmp_path, n_images=2, seed=seed)
    with NXmxCollection(synthetic.master_file) as collection:
        frame = collection.read_frames(1, 1)[0]
        spots = find_spots(frame, collection.valid_pixels)
    for row, col in synthetic.hot_pixels:
        distance = np.hypot(spots.x - (col + 0.5), spots.y - (row + 0.5))
        assert distance.min() > 1.0
