"""Overflowed pixels (2^n - 1) and counts above saturation_value are masked image by image
and counted: they reach no spot, no total_intensity, and per_image.csv reports them."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (writes into the bitshuffle-LZ4 data files)
import numpy as np
import pytest
from prefect.logging import disable_run_logger

from prefect_beamline.flows.mx import MXParameters, data_signature, find_spots_in_images
from prefect_beamline.techniques.mx import report
from prefect_beamline.techniques.mx.analysis import summarise
from prefect_beamline.techniques.mx.synth import SATURATION_VALUE, SyntheticCollection
from tests.helpers import mx_collection_with_frames

N_IMAGES = 4


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCollection:
    """A collection with, in every image, one overflowed pixel on a spot's peak, one in
    the background, and one pixel just above saturation_value."""
    collection, _ = mx_collection_with_frames(
        tmp_path_factory.mktemp("overflow"),
        n_images=N_IMAGES,
        shape=(256, 300),
        images_per_data_file=N_IMAGES,
        spots_per_image=20,
        seed=4,
    )
    valid = collection.pixel_mask == 0
    background = np.argwhere(valid)[[100, 5000]]
    with h5py.File(collection.data_files[0], "r+") as handle:
        data = handle["/entry/data/data"]
        for index in range(N_IMAGES):
            frame = data[index]
            spot = next(s for s in collection.spots if s.image_number == index + 1)
            frame[int(spot.y), int(spot.x)] = np.iinfo(np.uint32).max
            frame[tuple(background[0])] = np.iinfo(np.uint32).max
            frame[tuple(background[1])] = SATURATION_VALUE + 1
            data[index] = frame
    return collection


def test_overflow_never_reaches_an_intensity_and_is_counted(
    overflowing: SyntheticCollection, tmp_path: Path
) -> None:
    master = str(overflowing.master_file)
    with disable_run_logger():
        images = find_spots_in_images.fn(
            master, data_signature(master), 1, N_IMAGES, MXParameters(), 1
        )
    assert [image.n_overloads for image in images] == [3] * N_IMAGES
    # A spot's summed counts are a few thousand here; one 2^32 - 1 pixel would be 4.3e9.
    assert max(image.total_intensity for image in images) < 1e6
    assert min(image.n_spots for image in images) >= 10
    report.write_result_files(tmp_path, images, summarise(images, None), None)
    with open(tmp_path / report.PER_IMAGE_FILE) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["n_overloads"]) for row in rows] == [3] * N_IMAGES
