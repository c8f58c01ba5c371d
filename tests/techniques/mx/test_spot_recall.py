"""Spot finding on a synthetic Eiger collection recovers the planted spots.

Scored as a beamline scientist would: a found spot within 2 px of a true spot of the
same image matches it. Recall counts true spots with SNR >= 5; precision counts found
spots that match no true spot at all as false (a match to a weaker true spot is real
signal, not a false spot), over all found spots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_beamline.ext.spotfind import find_spots
from prefect_beamline.formats.nxmx import NXmxCollection
from prefect_beamline.techniques.mx.synth import write_mx_collection

MATCH_RADIUS_PX = 2.0
MIN_SNR = 5.0


def test_recall_and_precision_for_spots_with_snr_at_least_5(tmp_path: Path) -> None:
    synthetic = write_mx_collection(tmp_path, n_images=10, spots_per_image=40, seed=21)
    strong_found: list[bool] = []
    strong_snr: list[float] = []
    n_found = n_false = n_matching_weak = 0
    with NXmxCollection(synthetic.master_file) as collection:
        valid = collection.valid_pixels
        for image_number, frames in collection.iter_chunks(chunk_size=1):
            spots = find_spots(frames[0], valid)
            truth = [spot for spot in synthetic.spots if spot.image_number == image_number]
            true_x = np.array([spot.x for spot in truth])
            true_y = np.array([spot.y for spot in truth])
            snr = np.array([spot.snr for spot in truth])
            near = (
                np.hypot(spots.x[:, None] - true_x[None, :], spots.y[:, None] - true_y[None, :])
                <= MATCH_RADIUS_PX
            )  # (found, true)
            strong = snr >= MIN_SNR
            strong_found.extend(near[:, strong].any(axis=0))
            strong_snr.extend(snr[strong])
            n_found += len(spots)
            n_false += int((~near.any(axis=1)).sum())
            only_weak = near[:, ~strong].any(axis=1) & ~near[:, strong].any(axis=1)
            n_matching_weak += int(only_weak.sum())
    found = np.array(strong_found)
    recall = float(found.mean())
    precision = 1.0 - n_false / n_found
    print(
        f"\nrecall {recall:.3f} ({found.sum()}/{found.size} true spots with SNR >= {MIN_SNR:g})"
        f"\nprecision {precision:.3f} ({n_false} of {n_found} found spots match no true spot;"
        f" {n_matching_weak} match only a spot with SNR < {MIN_SNR:g})"
    )
    for low, high in ((5, 10), (10, 30), (30, 1000)):
        in_bin = (np.array(strong_snr) >= low) & (np.array(strong_snr) < high)
        print(f"  recall for SNR {low}-{high}: {found[in_bin].mean():.3f} of {in_bin.sum()}")
    assert found.size > 250
    assert recall >= 0.95
    assert precision >= 0.95


@pytest.mark.parametrize("seed", [1, 2])
def test_hot_pixels_are_never_reported_as_spots(tmp_path: Path, seed: int) -> None:
    synthetic = write_mx_collection(tmp_path, n_images=2, seed=seed)
    with NXmxCollection(synthetic.master_file) as collection:
        frame = collection.read_frames(1, 1)[0]
        spots = find_spots(frame, collection.valid_pixels)
    assert len(spots) > 20
    for row, col in synthetic.hot_pixels:
        assert frame[row, col] > 1000
        distance = np.hypot(spots.x - (col + 0.5), spots.y - (row + 0.5))
        assert distance.min() > 1.0
