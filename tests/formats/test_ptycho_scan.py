"""The scan reader gives back what the synthetic writer put in, and names what is wrong."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.ptycho import PtychoFileError, PtychoScan
from prefect_beamline.techniques.ptycho.analysis import positions_in_pixels
from prefect_beamline.techniques.ptycho.synth import SyntheticScan, write_ptycho_scan


@pytest.fixture
def scan(tmp_path: Path) -> SyntheticScan:
    return write_ptycho_scan(tmp_path, n_positions=25, pattern_size=32, step_px=4, seed=9)


def test_reader_returns_geometry_positions_mask_and_frames_by_chunks(scan: SyntheticScan) -> None:
    with PtychoScan(scan.scan_file) as read:
        assert read.n_positions == 25 and read.pattern_shape == (32, 32)
        geometry = read.geometry
        assert geometry.wavelength_m == pytest.approx(scan.wavelength_m, rel=1e-9)
        assert geometry.detector_distance_m == pytest.approx(scan.detector_distance_m)
        assert geometry.object_pixel_m == pytest.approx((scan.object_pixel_m,) * 2)
        np.testing.assert_array_equal(read.valid, scan.valid)
        corners, shape = positions_in_pixels(
            read.positions_m, geometry.object_pixel_m, read.pattern_shape
        )
        np.testing.assert_array_equal(corners, scan.positions_px)
        assert shape == scan.object_true.shape
        chunks = list(read.iter_chunks(chunk_size=10))
    assert [start for start, _ in chunks] == [0, 10, 20]
    frames = np.concatenate([frames for _, frames in chunks])
    assert frames.shape == (25, 32, 32) and frames.dtype == np.float32
    assert np.all(frames[:, ~scan.valid] == 0) and frames.sum() > 0


def test_positions_in_an_nxtransformations_group_and_an_energy_are_read(
    scan: SyntheticScan,
) -> None:
    with h5py.File(scan.scan_file, "a") as handle:
        x, y = handle["/entry/data/x"][()], handle["/entry/data/y"][()]
        del handle["/entry/data/x"], handle["/entry/data/y"]
        group = handle.create_group("/entry/sample/transformations")
        group.attrs["NX_class"] = "NXtransformations"
        for axis, values in (("x", x), ("y", y)):
            group.create_dataset(axis, data=values * 1e6).attrs["units"] = "um"
        del handle["/entry/instrument/beam/incident_wavelength"]
        handle.create_dataset("/entry/instrument/source/energy", data=6.2).attrs["units"] = "keV"
    with PtychoScan(scan.scan_file) as read:
        np.testing.assert_allclose(read.positions_m[:, 1], x)
        assert read.geometry.wavelength_m == pytest.approx(scan.wavelength_m, rel=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.__delitem__("/entry/data/data"), "/entry/data/data is missing"),
        (lambda h: h.__delitem__("/entry/data/y"), "scan positions are missing"),
        (lambda h: h["/entry/data/x"].attrs.__setitem__("units", "furlong"), "units 'furlong'"),
        (
            lambda h: h["/entry/instrument/detector/distance"].attrs.__setitem__("units", "m"),
            "/entry/instrument/detector/distance = 5000.0 m is outside",
        ),
        (lambda h: h.__delitem__("/entry/instrument/beam/incident_wavelength"), "no wavelength"),
        (lambda h: h.__delitem__("/entry/instrument/detector/x_pixel_size"), "x_pixel_size"),
        (
            lambda h: (
                h.__delitem__("/entry/data/x"),
                h.create_dataset("/entry/data/x", data=np.zeros(3)),
            ),
            "/entry/data/x holds 3 positions but /entry/data/data holds 25",
        ),
        (
            lambda h: (
                h.__delitem__("/entry/instrument/detector/pixel_mask"),
                h.create_dataset("/entry/instrument/detector/pixel_mask", data=np.zeros((4, 4))),
            ),
            "pixel_mask has shape",
        ),
    ],
)
def test_bad_fields_are_named_with_the_file(scan: SyntheticScan, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with h5py.File(scan.scan_file, "a") as handle:
        edit(handle)
    with pytest.raises(PtychoFileError, match=message) as raised:
        PtychoScan(scan.scan_file)
    assert str(scan.scan_file) in str(raised.value)
    assert isinstance(raised.value, DataFileError)


def test_missing_and_non_hdf5_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PtychoFileError, match="does not exist"):
        PtychoScan(tmp_path / "nothing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(PtychoFileError, match="junk.h5: not a readable HDF5"):
        PtychoScan(junk)
