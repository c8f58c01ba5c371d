"""NXmx reading: geometry, mask, streamed frames, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from prefect_beamline.formats.nxmx import NXmxCollection, NXmxError
from prefect_beamline.synth import write_mx_collection
from prefect_beamline.synth.mx import eiger_gap_mask


@pytest.fixture
def collection(tmp_path: Path):  # type: ignore[no-untyped-def]
    return write_mx_collection(tmp_path, n_images=7, images_per_data_file=3, shape=(120, 160))


def test_layout_is_eiger_nxmx_with_bitshuffle_lz4(collection) -> None:  # type: ignore[no-untyped-def]
    with h5py.File(collection.master_file) as master:
        assert master["/entry/definition"][()] == b"NXmx"
        link = master["/entry/data"].get("data_000001", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        data = master["/entry/data/data_000001"]
        assert hdf5plugin.BSHUF_ID in data.id.get_create_plist().get_filter(0)[:1]
        assert data.attrs["image_nr_low"] == 1 and data.attrs["image_nr_high"] == 3
    assert [p.name for p in collection.data_files] == [
        "xtal_1_data_000001.h5", "xtal_1_data_000002.h5", "xtal_1_data_000003.h5"
    ]


def test_geometry_and_mask_read_back(collection) -> None:  # type: ignore[no-untyped-def]
    with NXmxCollection(collection.master_file) as data:
        geometry = data.geometry
        assert data.n_images == 7
        assert geometry.image_shape == (120, 160)
        assert geometry.wavelength_angstrom == pytest.approx(collection.wavelength_angstrom)
        assert geometry.detector_distance_mm == pytest.approx(collection.detector_distance_mm)
        assert geometry.pixel_size_x_mm == pytest.approx(0.075)
        assert (geometry.beam_centre_x_px, geometry.beam_centre_y_px) == pytest.approx(
            collection.beam_centre_px
        )
        assert not data.valid_pixels[eiger_gap_mask((120, 160))].any()
        assert data.valid_pixels.mean() > 0.8


def test_resolution_reaches_d_min_true_at_the_outermost_spot(collection) -> None:  # type: ignore[no-untyped-def]
    with NXmxCollection(collection.master_file) as data:
        x = np.array([s.x for s in collection.spots])
        y = np.array([s.y for s in collection.spots])
        d = data.geometry.resolution_angstrom(x, y)
    assert d.min() >= collection.d_min_true * 0.999
    assert d.min() < collection.d_min_true * 1.1
    assert np.isinf(data.geometry.resolution_angstrom(np.array([data.geometry.beam_centre_x_px]),
                                                      np.array([data.geometry.beam_centre_y_px])))[0]


def test_chunks_stream_across_data_files(collection) -> None:  # type: ignore[no-untyped-def]
    with NXmxCollection(collection.master_file) as data:
        whole = data.read_frames(1, 7)
        chunks = list(data.iter_chunks(2, 7, chunk_size=4))
    assert [first for first, _ in chunks] == [2, 6]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), whole[1:])
    assert whole.dtype == np.uint32 and whole.shape == (7, 120, 160)
    assert (whole[:, collection.hot_pixels[0][0], collection.hot_pixels[0][1]] > 10_000).all()


def test_missing_master_is_named(tmp_path: Path) -> None:
    with pytest.raises(NXmxError, match="nothing_master.h5: master file does not exist"):
        NXmxCollection(tmp_path / "nothing_master.h5")


def test_corrupt_master_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad_master.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(NXmxError, match="bad_master.h5: not a readable HDF5 file"):
        NXmxCollection(bad)


def test_missing_field_is_named(collection) -> None:  # type: ignore[no-untyped-def]
    with h5py.File(collection.master_file, "a") as master:
        del master["/entry/instrument/beam/incident_wavelength"]
    with pytest.raises(NXmxError, match="/entry/instrument/beam/incident_wavelength is missing"):
        NXmxCollection(collection.master_file)


def test_bad_units_are_named(collection) -> None:  # type: ignore[no-untyped-def]
    with h5py.File(collection.master_file, "a") as master:
        master["/entry/instrument/detector/detector_distance"].attrs["units"] = "furlong"
    with pytest.raises(NXmxError, match="detector_distance has units 'furlong'"):
        NXmxCollection(collection.master_file)


def test_missing_data_file_is_named(collection) -> None:  # type: ignore[no-untyped-def]
    collection.data_files[1].unlink()
    with pytest.raises(NXmxError, match="xtal_1_data_000002.h5: data file linked from"):
        NXmxCollection(collection.master_file)


def test_truncated_data_file_is_named(collection) -> None:  # type: ignore[no-untyped-def]
    broken = collection.data_files[2]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(NXmxError, match="xtal_1_data_000003.h5"):
        with NXmxCollection(collection.master_file) as data:
            data.read_frames(7, 7)


def test_out_of_range_images_are_refused(collection) -> None:  # type: ignore[no-untyped-def]
    with NXmxCollection(collection.master_file) as data, pytest.raises(
        NXmxError, match=r"images 5\.\.9 requested, the collection has images 1\.\.7"
    ):
        data.read_frames(5, 9)


def test_grid_scan_spot_counts_peak_at_the_crystal(tmp_path: Path) -> None:
    from prefect_beamline.analysis.mx import grid_image_index
    from prefect_beamline.events import GridScan

    grid = GridScan(steps_x=7, steps_y=5, dx_um=10, dy_um=10, snaked=True)
    synthetic = write_mx_collection(tmp_path, grid=grid, shape=(100, 120), seed=4)
    counts = np.bincount([s.image_number - 1 for s in synthetic.spots], minlength=35)
    best_y, best_x = np.unravel_index(np.argmax(counts[grid_image_index(grid)]), (5, 7))
    assert synthetic.grid_centre_true is not None
    assert abs(best_x - synthetic.grid_centre_true[0]) <= 1
    assert abs(best_y - synthetic.grid_centre_true[1]) <= 1
