"""The NXmx reader: geometry, mask and frames round-trip from synthetic Eiger files, and
every failure names the file and the field."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.nxmx import NXmxCollection, NXmxError
from prefect_beamline.techniques.mx.synth import SyntheticCollection
from tests.helpers import mx_collection_with_frames

SHAPE = (64, 80)
N_IMAGES = 7  # three data files: images 1-3, 4-6, 7


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticCollection, np.ndarray]:
    """A small collection written once, with the frames the writer produced."""
    return mx_collection_with_frames(
        tmp_path_factory.mktemp("nxmx"),
        n_images=N_IMAGES,
        shape=SHAPE,
        images_per_data_file=3,
        spots_per_image=6,
        detector_distance_mm=150.0,
        wavelength_angstrom=1.2,
        seed=2,
    )


@pytest.fixture(scope="module")
def synthetic(original: tuple[SyntheticCollection, np.ndarray]) -> SyntheticCollection:
    """The collection as its writer describes it (ground truth)."""
    return original[0]


@pytest.fixture(scope="module")
def frames(original: tuple[SyntheticCollection, np.ndarray]) -> np.ndarray:
    """The collection's frames as written, image 1 first."""
    return original[1]


@pytest.fixture
def data(synthetic: SyntheticCollection) -> Iterator[NXmxCollection]:
    """The reader, open on the shared collection."""
    with NXmxCollection(synthetic.master_file) as reader:
        yield reader


@pytest.fixture
def collection(synthetic: SyntheticCollection, tmp_path: Path) -> SyntheticCollection:
    """A private copy of the collection, for tests that damage files."""
    for path in [synthetic.master_file, *synthetic.data_files]:
        shutil.copy(path, tmp_path / path.name)
    return SyntheticCollection(
        **{
            **synthetic.__dict__,
            "master_file": tmp_path / synthetic.master_file.name,
            "data_files": [tmp_path / path.name for path in synthetic.data_files],
        }
    )


def test_geometry_is_what_the_writer_wrote(
    synthetic: SyntheticCollection, data: NXmxCollection
) -> None:
    geometry = data.geometry
    assert data.n_images == N_IMAGES
    assert data.data_files == synthetic.data_files
    assert geometry.wavelength_angstrom == pytest.approx(1.2, rel=1e-6)
    assert geometry.detector_distance_mm == pytest.approx(150.0, rel=1e-6)
    assert geometry.pixel_size_x_mm == pytest.approx(0.075, rel=1e-6)
    assert geometry.pixel_size_y_mm == pytest.approx(0.075, rel=1e-6)
    assert (geometry.beam_centre_x_px, geometry.beam_centre_y_px) == pytest.approx(
        synthetic.beam_centre_px
    )
    assert geometry.saturation_value == synthetic.saturation_value
    assert geometry.image_shape == SHAPE


def test_valid_pixels_are_where_the_pixel_mask_is_zero(
    synthetic: SyntheticCollection, data: NXmxCollection
) -> None:
    valid = data.valid_pixels
    np.testing.assert_array_equal(valid, synthetic.pixel_mask == 0)
    assert 0 < (~valid).sum() < valid.size // 5
    assert not valid.flags.writeable


def test_read_frames_returns_the_frames_written(data: NXmxCollection, frames: np.ndarray) -> None:
    everything = data.read_frames(1, N_IMAGES)
    last = data.read_frames(N_IMAGES, N_IMAGES)
    assert everything.dtype == np.uint32
    np.testing.assert_array_equal(everything, frames)
    np.testing.assert_array_equal(last, frames[-1:])


def test_read_frames_stitches_a_range_spanning_data_files(
    data: NXmxCollection, frames: np.ndarray
) -> None:
    np.testing.assert_array_equal(data.read_frames(3, 7), frames[2:7])


def test_iter_chunks_covers_the_range_across_data_file_boundaries(
    data: NXmxCollection, frames: np.ndarray
) -> None:
    chunks = list(data.iter_chunks(2, 7, chunk_size=4))
    everything = list(data.iter_chunks())
    assert [start for start, _ in chunks] == [2, 6]
    assert [len(chunk) for _, chunk in chunks] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([chunk for _, chunk in chunks]), frames[1:7])
    assert [start for start, _ in everything] == [1]
    np.testing.assert_array_equal(everything[0][1], frames)


def test_resolution_follows_bragg_law_on_a_flat_detector(
    synthetic: SyntheticCollection, data: NXmxCollection
) -> None:
    geometry = data.geometry
    beam_x, beam_y = synthetic.beam_centre_px
    d = geometry.resolution_angstrom(np.array([beam_x, beam_x + 40.0]), np.array([beam_y, beam_y]))
    two_theta = math.atan(40 * 0.075 / 150.0)
    assert math.isinf(d[0])
    assert d[1] == pytest.approx(1.2 / (2 * math.sin(two_theta / 2)), rel=1e-5)


def test_millimetre_units_are_converted_too(collection: SyntheticCollection) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        detector = master["/entry/instrument/detector"]
        for name, value in (("detector_distance", 150.0), ("x_pixel_size", 0.075)):
            del detector[name]
            detector[name] = value
            detector[name].attrs["units"] = "mm"
        beam_x = detector["beam_center_x"]
        beam_x[()] = collection.beam_centre_px[0] * 0.075
        beam_x.attrs["units"] = "mm"
    with NXmxCollection(collection.master_file) as data:
        assert data.geometry.detector_distance_mm == pytest.approx(150.0)
        assert data.geometry.pixel_size_x_mm == pytest.approx(0.075)
        assert data.geometry.beam_centre_x_px == pytest.approx(collection.beam_centre_px[0])


def test_closing_releases_the_data_files(collection: SyntheticCollection) -> None:
    with NXmxCollection(collection.master_file) as data:
        data.read_frames(1, N_IMAGES)
    for path in collection.data_files:
        with h5py.File(path, "r+"):  # fails while another handle holds the file read-only
            pass


def test_missing_master_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nothing_master.h5"
    with pytest.raises(NXmxError, match="nothing_master.h5: master file does not exist"):
        NXmxCollection(missing)


def test_master_that_is_not_hdf5_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus_master.h5"
    bogus.write_text("this is not HDF5\n")
    with pytest.raises(NXmxError, match="bogus_master.h5: not a readable HDF5"):
        NXmxCollection(bogus)


@pytest.mark.parametrize(
    "field",
    [
        "/entry/instrument/detector/y_pixel_size",
        "/entry/instrument/detector/x_pixel_size",
        "/entry/instrument/detector/beam_center_y",
    ],
)
def test_missing_required_field_is_named_with_the_master(
    collection: SyntheticCollection, field: str
) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        del master[field]
    with pytest.raises(NXmxError) as caught:
        NXmxCollection(collection.master_file)
    assert str(collection.master_file) in str(caught.value)
    assert f"required field {field}" in str(caught.value)


def test_missing_wavelength_is_taken_from_the_photon_energy(
    collection: SyntheticCollection,
) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        del master["/entry/instrument/beam/incident_wavelength"]
    with NXmxCollection(collection.master_file) as data:
        assert data.geometry.wavelength_angstrom == pytest.approx(1.2, rel=1e-6)


def test_missing_detector_distance_names_every_place_it_may_be(
    collection: SyntheticCollection,
) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        del master["/entry/instrument/detector/detector_distance"]
        del master["/entry/instrument/detector/distance"]
    with pytest.raises(NXmxError, match="/entry/instrument/detector/detector_distance"):
        NXmxCollection(collection.master_file)


def test_unknown_units_are_named_with_the_field(collection: SyntheticCollection) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        master["/entry/instrument/detector/detector_distance"].attrs["units"] = "furlong"
    with pytest.raises(NXmxError, match=r"detector_distance has units 'furlong', expected"):
        NXmxCollection(collection.master_file)


def test_value_in_other_units_than_its_attribute_says_is_caught(
    collection: SyntheticCollection,
) -> None:
    with h5py.File(collection.master_file, "r+") as master:
        master["/entry/instrument/detector/detector_distance"][()] = 150.0  # mm, labelled m
    with pytest.raises(NXmxError, match=r"detector_distance is 150.0 m .* expected 1 to"):
        NXmxCollection(collection.master_file)


def test_missing_data_file_is_named(collection: SyntheticCollection) -> None:
    collection.data_files[1].unlink()
    with pytest.raises(NXmxError) as caught:
        NXmxCollection(collection.master_file)
    message = str(caught.value)
    assert message.startswith(f"{collection.data_files[1]}: data file does not exist")
    assert "/entry/data/data_000002" in message and "images from 4" in message


def test_truncated_data_file_is_named_with_its_images(collection: SyntheticCollection) -> None:
    broken = collection.data_files[2]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(NXmxError) as caught:
        NXmxCollection(collection.master_file)
    message = str(caught.value)
    assert message.startswith(f"{broken}: data file is not readable HDF5, truncated or corrupt")
    assert "images from 7" in message


def test_corrupt_chunk_is_named_with_data_file_and_image_number(
    collection: SyntheticCollection,
) -> None:
    broken = collection.data_files[1]  # images 4-6
    with h5py.File(broken, "r") as handle:
        chunk = handle["/entry/data/data"].id.get_chunk_info(1)  # image 5
    content = bytearray(broken.read_bytes())
    content[chunk.byte_offset : chunk.byte_offset + chunk.size] = b"\xab" * chunk.size
    broken.write_bytes(bytes(content))
    with NXmxCollection(collection.master_file) as data:
        assert data.read_frames(1, 4).shape == (4, *SHAPE)  # the good frames still read
        with pytest.raises(NXmxError) as caught:
            data.read_frames(3, 6)
    message = str(caught.value)
    assert message.startswith(f"{broken}: cannot read image 5")


@pytest.mark.parametrize("first, last", [(0, 3), (5, N_IMAGES + 1), (4, 3)])
def test_image_range_outside_the_collection_is_refused(
    data: NXmxCollection, first: int, last: int
) -> None:
    with pytest.raises(NXmxError, match=rf"images {first}\.\.{last} requested, expected a "):
        data.read_frames(first, last)
    with pytest.raises(NXmxError, match=rf"within 1\.\.{N_IMAGES}"):
        next(data.iter_chunks(first, last))
