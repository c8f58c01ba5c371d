"""The tomography reader (NXtomo, Data Exchange) and the volume writer."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.errors import DataFileError
from prefect_beamline.formats.nxtomo import NXTOMO_DATA, NXTOMO_IMAGE_KEY, TomoScan
from prefect_beamline.techniques.tomo.synth import write_tomo_scan
from prefect_beamline.techniques.tomo.volume import VolumeWriter, central_slices


@pytest.fixture(scope="module")
def nxtomo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scan = write_tomo_scan(tmp_path_factory.mktemp("nxtomo"), n_columns=48, n_rows=4,
                           n_projections=30, n_flats=4, n_darks=3, seed=1)  # fmt: skip
    return scan.path


def test_nxtomo_splits_frames_by_image_key(nxtomo: Path) -> None:
    with h5py.File(nxtomo) as handle:
        frames = handle[NXTOMO_DATA][()]
        keys = handle[NXTOMO_IMAGE_KEY][()]
    with TomoScan(nxtomo) as scan:
        assert scan.layout == "nxtomo"
        assert (scan.n_projections, scan.n_rows, scan.n_columns) == (30, 4, 48)
        np.testing.assert_allclose(scan.angles_deg, np.linspace(0, 180, 30))
        np.testing.assert_array_equal(scan.read_rows(1, 3), frames[keys == 0][:, 1:3])
        flat, dark = scan.flat_and_dark(1, 3)
        np.testing.assert_allclose(flat, frames[keys == 1][:, 1:3].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(dark, frames[keys == 2][:, 1:3].mean(axis=0), rtol=1e-6)
        bands = [(first, stop) for first, stop, _ in scan.iter_rows(3)]
        assert bands == [(0, 3), (3, 4)]


def test_data_exchange_reads_like_nxtomo(tmp_path: Path, nxtomo: Path) -> None:
    exchange = write_tomo_scan(tmp_path, n_columns=48, n_rows=4, n_projections=30,
                               n_flats=4, n_darks=3, seed=1, layout="dxchange")  # fmt: skip
    with TomoScan(exchange.path) as dx, TomoScan(nxtomo) as nx:
        assert dx.layout == "dxchange"
        np.testing.assert_allclose(dx.angles_deg, nx.angles_deg)
        np.testing.assert_array_equal(dx.read_rows(0, 4), nx.read_rows(0, 4))
        for mine, theirs in zip(dx.flat_and_dark(0, 4), nx.flat_and_dark(0, 4), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_data_exchange_theta_in_radians_is_converted(tmp_path: Path) -> None:
    scan = write_tomo_scan(tmp_path, n_columns=32, n_rows=2, n_projections=10, layout="dxchange")
    with h5py.File(scan.path, "a") as handle:
        theta = handle["/exchange/theta"]
        theta[...] = np.deg2rad(theta[()])
        theta.attrs["units"] = "rad"
    with TomoScan(scan.path) as reopened:
        np.testing.assert_allclose(reopened.angles_deg, scan.angles_deg)


def test_missing_image_key_names_file_and_field(tmp_path: Path) -> None:
    scan = write_tomo_scan(tmp_path, n_columns=32, n_rows=2, n_projections=10)
    with h5py.File(scan.path, "a") as handle:
        del handle["/entry/data/image_key"]
        del handle[NXTOMO_IMAGE_KEY]
    with pytest.raises(DataFileError, match=rf"{scan.path}.*{NXTOMO_IMAGE_KEY}"):
        TomoScan(scan.path)


def test_scan_without_flats_is_refused(tmp_path: Path) -> None:
    scan = write_tomo_scan(tmp_path, n_columns=32, n_rows=2, n_projections=10)
    with h5py.File(scan.path, "a") as handle:
        keys = handle[NXTOMO_IMAGE_KEY]
        keys[keys[()] == 1] = 3  # flats marked invalid
    with pytest.raises(DataFileError, match="no flat-field frames"):
        TomoScan(scan.path)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    scan = write_tomo_scan(tmp_path, n_columns=32, n_rows=2, n_projections=10)
    scan.path.write_bytes(scan.path.read_bytes()[: scan.path.stat().st_size // 2])
    with pytest.raises(DataFileError, match=str(scan.path)), TomoScan(scan.path) as opened:
        opened.read_rows(0, 2)


def test_corrupt_projection_chunk_names_file_and_dataset(tmp_path: Path) -> None:
    scan = write_tomo_scan(tmp_path, n_columns=32, n_rows=2, n_projections=10)
    with h5py.File(scan.path) as handle:
        offset = handle[NXTOMO_DATA].id.get_chunk_info(17).byte_offset
    # Garble one compressed projection (frames 0-14 are the darks and the first flats).
    with scan.path.open("r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xff" * 64)
    with (
        TomoScan(scan.path) as opened,
        pytest.raises(DataFileError, match=rf"{scan.path}.*{NXTOMO_DATA}"),
    ):
        opened.read_rows(0, 2)


def test_missing_file_is_a_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        TomoScan(tmp_path / "absent.nxs")


def test_volume_is_published_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "volume.h5"
    volume = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    with VolumeWriter(target, (4, 6, 6), first_row=10, process={"centre": 3.0}) as writer:
        writer.write(2, volume[2:])
        assert writer.partial.exists() and not target.exists()
        writer.write(0, volume[:2])
    assert target.exists() and not writer.partial.exists()
    with h5py.File(target) as handle:
        data = handle["/entry/data/data"]
        assert handle["/entry/data"].attrs["signal"] == "data"
        assert data.dtype == np.float32 and data.chunks is not None
        assert data.compression == "gzip"
        np.testing.assert_array_equal(data[()], volume)
        np.testing.assert_array_equal(handle["/entry/data/z"][()], [10, 11, 12, 13])
    planes = central_slices(target)
    np.testing.assert_array_equal(planes["xy"], volume[2])
    np.testing.assert_array_equal(planes["xz"], volume[:, 3, :])
    np.testing.assert_array_equal(planes["yz"], volume[:, :, 3])


def test_failed_volume_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "volume.h5"
    with (
        pytest.raises(RuntimeError, match="chunk failed"),
        VolumeWriter(target, (4, 6, 6), first_row=0, process={}) as writer,
    ):
        writer.write(0, np.zeros((2, 6, 6), dtype=np.float32))
        raise RuntimeError("chunk failed")
    assert list(tmp_path.iterdir()) == []


def test_volume_with_missing_slices_is_not_published(tmp_path: Path) -> None:
    target = tmp_path / "volume.h5"
    writer = VolumeWriter(target, (4, 6, 6), first_row=0, process={})
    writer.write(0, np.zeros((3, 6, 6), dtype=np.float32))
    with pytest.raises(RuntimeError, match="1 slices were never written"):
        writer.publish()
    assert list(tmp_path.iterdir()) == []
