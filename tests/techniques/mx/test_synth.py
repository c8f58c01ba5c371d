"""The synthetic Eiger collection: NXmx layout as the Dectris filewriter writes it, and
ground truth that agrees with the pixels written."""

from __future__ import annotations

import math
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from prefect_beamline.events import GridScan
from prefect_beamline.techniques.mx.analysis import grid_image_index
from prefect_beamline.techniques.mx.synth import (
    EIGER_GAP_PX,
    EIGER_MODULE_SHAPE,
    HOT_PIXEL_COUNTS,
    MASKED_PIXEL_VALUE,
    SyntheticCollection,
    eiger_gap_mask,
    resolution_radius_px,
    write_mx_collection,
)
from tests.helpers import mx_collection_with_frames

SHAPE = (160, 200)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticCollection, np.ndarray]:
    """A small rotation collection over three data files, and its frames as written."""
    return mx_collection_with_frames(
        tmp_path_factory.mktemp("synth"),
        n_images=5,
        shape=SHAPE,
        images_per_data_file=2,
        spots_per_image=15,
        d_min_true=15.0,
        detector_distance_mm=100.0,
        seed=4,
    )


def test_master_is_an_nxmx_entry_linking_each_data_file(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, _ = written
    assert collection.master_file.name == "xtal_1_master.h5"
    assert [path.name for path in collection.data_files] == [
        f"xtal_1_data_{index:06d}.h5" for index in (1, 2, 3)
    ]
    with h5py.File(collection.master_file, "r") as master:
        assert master["/entry"].attrs["NX_class"] == "NXentry"
        assert master["/entry/definition"][()] == b"NXmx"
        data = master["/entry/data"]
        assert sorted(data) == ["data_000001", "data_000002", "data_000003"]
        for index, path in enumerate(collection.data_files, start=1):
            link = data.get(f"data_{index:06d}", getlink=True)
            assert isinstance(link, h5py.ExternalLink)
            assert (link.filename, link.path) == (path.name, "/entry/data/data")


def test_data_files_hold_bitshuffle_lz4_uint32_frames_one_per_chunk(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, _ = written
    image_ranges = []
    for path in collection.data_files:
        with h5py.File(path, "r") as handle:
            data = handle["/entry/data/data"]
            assert data.dtype == np.uint32
            assert data.chunks == (1, *SHAPE)
            assert hdf5plugin.Bitshuffle.filter_id == 32008
            assert str(32008) in data._filters
            image_ranges.append((int(data.attrs["image_nr_low"]), int(data.attrs["image_nr_high"])))
    assert image_ranges == [(1, 2), (3, 4), (5, 5)]


def test_detector_fields_are_in_the_units_the_eiger_writes(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, _ = written
    with h5py.File(collection.master_file, "r") as master:
        detector = master["/entry/instrument/detector"]
        assert detector.attrs["NX_class"] == "NXdetector"
        assert detector["detector_distance"].attrs["units"] == "m"
        assert detector["detector_distance"][()] == pytest.approx(0.1)
        assert detector["x_pixel_size"].attrs["units"] == "m"
        assert detector["x_pixel_size"][()] == pytest.approx(75e-6)
        assert detector["beam_center_x"].attrs["units"] == "pixel"
        assert detector["beam_center_x"][()] == pytest.approx(collection.beam_centre_px[0])
        assert detector["saturation_value"][()] == collection.saturation_value
        assert detector["sensor_thickness"].attrs["units"] == "m"
        assert detector["count_time"].attrs["units"] == "s"
        specific = detector["detectorSpecific"]
        assert specific["nimages"][()] == 5
        assert specific["ntrigger"][()] == 1
        assert (specific["y_pixels_in_detector"][()], specific["x_pixels_in_detector"][()]) == SHAPE
        mask = detector["pixel_mask"]
        assert mask.dtype == np.uint32
        np.testing.assert_array_equal(mask[()], collection.pixel_mask)
        wavelength = master["/entry/instrument/beam/incident_wavelength"]
        assert wavelength.attrs["units"] == "angstrom"
        assert wavelength[()] == pytest.approx(0.9763)
        omega = master["/entry/sample/goniometer/omega"]
        np.testing.assert_allclose(omega[()], 0.1 * np.arange(5))
        assert master["/entry/sample/goniometer/omega_increment_set"][()] == pytest.approx(0.1)


def test_spots_lie_inside_the_d_min_radius_clear_of_masked_pixels(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, _ = written
    assert len(collection.spots) == 5 * 15
    radius = resolution_radius_px(15.0, collection.wavelength_angstrom, 100.0, 0.075)
    assert radius < math.hypot(*SHAPE) / 2  # the limit really cuts the detector
    beam_x, beam_y = collection.beam_centre_px
    masked = collection.pixel_mask != 0
    radii = [math.hypot(spot.x - beam_x, spot.y - beam_y) for spot in collection.spots]
    assert max(radii) <= radius
    assert max(radii) > 0.85 * radius  # and they reach out to it
    for spot in collection.spots:
        row, col = int(spot.y), int(spot.x)
        assert not masked[row - 3 : row + 4, col - 3 : col + 4].any()


def test_spot_counts_and_snr_agree_with_the_pixels_written(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    """Counts above background in a 9x9 box match total_counts within Poisson noise."""
    collection, frames = written
    snrs = [spot.snr for spot in collection.spots]
    assert min(snrs) < 4 and max(snrs) > 60  # log-uniform over ~2..200
    for spot in collection.spots:
        row, col = int(spot.y), int(spot.x)
        box = frames[spot.image_number - 1, row - 4 : row + 5, col - 4 : col + 5]
        ring = np.concatenate([box[0], box[-1], box[1:-1, 0], box[1:-1, -1]]).astype(float)
        signal = box.astype(float).sum() - ring.mean() * box.size
        noise = math.sqrt(spot.total_counts + ring.mean() * box.size)
        assert abs(signal - spot.total_counts) < 6 * noise + 0.05 * spot.total_counts
        # snr = I / sqrt(I + B), B the background under the 3-sigma disc: sigma is 0.7 to
        # 1.2 px and the background 0.8 to 1.2 counts, so B lies between these bounds.
        low_b, high_b = (math.pi * (3 * sigma) ** 2 * bg for sigma, bg in ((0.7, 0.8), (1.2, 1.2)))
        assert spot.total_counts / math.sqrt(spot.total_counts + high_b) <= spot.snr * 1.0001
        assert spot.snr <= spot.total_counts / math.sqrt(spot.total_counts + low_b) * 1.0001


def test_hot_pixels_are_unmasked_and_high_in_every_frame(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, frames = written
    assert collection.hot_pixels
    for row, col in collection.hot_pixels:
        assert collection.pixel_mask[row, col] == 0
        assert (frames[:, row, col] == HOT_PIXEL_COUNTS).all()
        assert 1000 < HOT_PIXEL_COUNTS < collection.saturation_value


def test_masked_pixels_carry_the_eiger_masked_value_and_the_rest_is_below_saturation(
    written: tuple[SyntheticCollection, np.ndarray],
) -> None:
    collection, frames = written
    masked = collection.pixel_mask != 0
    assert (frames[:, masked] == MASKED_PIXEL_VALUE).all()
    assert (frames[:, ~masked] <= collection.saturation_value).all()
    background = np.median(frames[:, ~masked])
    assert 0 <= background <= 2  # Poisson background of mean ~1


def test_small_detector_gets_a_masked_gap_band_each_way() -> None:
    gaps = eiger_gap_mask(SHAPE)
    assert gaps.all(axis=1).any()  # a full masked row band
    assert gaps.all(axis=0).any()  # a full masked column band
    assert gaps.mean() < 0.1


def test_large_detector_gets_the_eiger_module_gaps() -> None:
    module_y, module_x = EIGER_MODULE_SHAPE
    gap_y, gap_x = EIGER_GAP_PX
    gaps = eiger_gap_mask((2 * module_y + gap_y, 2 * module_x + gap_x))  # an Eiger 4M half
    assert gaps[module_y : module_y + gap_y].all()
    assert gaps[:, module_x : module_x + gap_x].all()
    assert not gaps[:module_y, :module_x].any()
    assert not gaps[module_y + gap_y :, module_x + gap_x :].any()


def _count_map(collection: SyntheticCollection) -> np.ndarray:
    assert collection.grid is not None
    per_image = np.zeros(collection.n_images, dtype=np.int64)
    for spot in collection.spots:
        per_image[spot.image_number - 1] += 1
    return per_image[grid_image_index(collection.grid)]


def test_grid_scan_spot_counts_peak_at_the_crystal_centre(tmp_path: Path) -> None:
    grid = GridScan(steps_x=9, steps_y=7, dx_um=20, dy_um=20)
    collection = write_mx_collection(
        tmp_path, name="grid_1", grid=grid, shape=(128, 128), spots_per_image=12, seed=3
    )
    assert collection.n_images == 63
    assert collection.grid_centre_true is not None
    true_x, true_y = collection.grid_centre_true
    counts = _count_map(collection)
    best_y, best_x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    assert abs(best_x - true_x) <= 1 and abs(best_y - true_y) <= 1
    far = np.hypot(*np.meshgrid(np.arange(9) - true_x, np.arange(7) - true_y)) > 4
    assert counts[far].max() <= 1  # far from the crystal: (almost) no spots
    with h5py.File(collection.master_file, "r") as master:
        assert (master["/entry/sample/goniometer/omega"][()] == 0).all()


def test_snaked_grid_scan_reverses_odd_rows_in_image_order(tmp_path: Path) -> None:
    def written_grid(snaked: bool) -> SyntheticCollection:
        grid = GridScan(steps_x=6, steps_y=4, dx_um=10, dy_um=10, snaked=snaked)
        return write_mx_collection(
            tmp_path / str(snaked), grid=grid, shape=(96, 96), spots_per_image=8, seed=9
        )

    plain, snaked = written_grid(False), written_grid(True)
    assert plain.grid_centre_true == snaked.grid_centre_true
    np.testing.assert_array_equal(_count_map(plain), _count_map(snaked))
    per_image = np.bincount([spot.image_number - 1 for spot in snaked.spots], minlength=24)
    second_row_in_image_order = per_image[6:12]
    np.testing.assert_array_equal(second_row_in_image_order, _count_map(snaked)[1, ::-1])


def test_default_collection_writes_in_well_under_a_second(tmp_path: Path) -> None:
    started = time.perf_counter()
    collection = write_mx_collection(tmp_path)
    elapsed = time.perf_counter() - started
    print(f"default collection (10 x 514 x 1030, 400 spots): {elapsed:.2f} s")
    assert collection.n_images == 10 and len(collection.data_files) == 2
    assert elapsed < 1.0


def test_rejects_d_min_below_the_diffraction_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="d_min_true"):
        write_mx_collection(tmp_path, d_min_true=0.4, wavelength_angstrom=1.0)
