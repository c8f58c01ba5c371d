"""The NXmx reader on masters as the field writes them: FileWriter1/2, EIGER1/2 field
locations, nexgen/Odin VDS (our writer of the public layouts, and nexgen itself), every
place the wavelength may be, any image_nr_start and every frame type."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.formats.nxmx import NXmxCollection, NXmxError
from tests.formats.nexgen_master import write_with_nexgen
from tests.formats.nxmx_layouts import (
    BEAM_PX,
    DISTANCE_M,
    SATURATION,
    WAVELENGTH_A,
    Layout,
    write_master,
)

SHAPE = (24, 32)
N_IMAGES = 7


def frames_of(dtype: type = np.uint32, n: int = N_IMAGES) -> np.ndarray:
    """Distinct frames (each image's number in its corner), in `dtype`."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 200, (n, *SHAPE)).astype(dtype)
    frames[:, 0, 0] = np.arange(n)
    return frames


def check_collection(master: Path, frames: np.ndarray) -> NXmxCollection:
    """Open `master`, compare geometry, mask and every frame with what was written."""
    with NXmxCollection(master) as data:
        assert data.n_images == len(frames)
        assert data.geometry.wavelength_angstrom == pytest.approx(WAVELENGTH_A, rel=1e-6)
        assert data.geometry.detector_distance_mm == pytest.approx(DISTANCE_M * 1000)
        assert (data.geometry.beam_centre_x_px, data.geometry.beam_centre_y_px) == BEAM_PX
        assert data.geometry.saturation_value == SATURATION
        assert data.geometry.image_shape == SHAPE
        assert (~data.valid_pixels).sum() == SHAPE[0] + 1
        np.testing.assert_array_equal(data.read_frames(1, len(frames)), frames)
        np.testing.assert_array_equal(data.read_frames(3, 5), frames[2:5])
    return data


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(Layout(), id="filewriter1-eiger2"),
        pytest.param(
            Layout(links="vds", distance_field="distance", mask="threshold_1_channel"),
            id="filewriter2-vds",
        ),
        pytest.param(Layout(saturation="eiger1_module"), id="eiger1-module-cutoff"),
        pytest.param(Layout(links="nexgen", mask="nxmx"), id="nexgen-vds"),
        pytest.param(Layout(links="interleaved_vds", mask="nxmx"), id="odin-interleaved-vds"),
        pytest.param(Layout(wavelength="sample"), id="wavelength-sample-beam-nm"),
        pytest.param(Layout(wavelength="photon_energy"), id="photon-energy-ev"),
        pytest.param(Layout(wavelength="incident_energy"), id="incident-energy-kev"),
        pytest.param(Layout(image_nr_start=0), id="image-nr-start-0"),
        pytest.param(Layout(image_nr_start=101), id="image-nr-start-101"),
    ],
)
def test_field_layout_reads_geometry_mask_and_frames(layout: Layout, tmp_path: Path) -> None:
    frames = frames_of()
    check_collection(write_master(tmp_path, "xtal", frames, layout), frames)


def test_image_nr_start_is_reported(tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(), Layout(image_nr_start=0))
    with NXmxCollection(master) as data:
        assert data.image_nr_start == 0


def test_vds_is_read_straight_from_its_data_files(tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(), Layout(links="vds"))
    with NXmxCollection(master) as data:
        assert data.data_files == sorted(tmp_path.glob("xtal_data_*.h5"))


@pytest.mark.parametrize(
    "dtype, overflow",
    [(np.uint8, 255), (np.uint16, 65535), (np.uint32, 2**32 - 1), (np.int32, 2**31 - 1)],
)
def test_integer_frames_of_every_width_are_read_for_the_kernel(
    dtype: type, overflow: int, tmp_path: Path
) -> None:
    frames = frames_of(dtype)
    master = write_master(tmp_path, "xtal", frames, Layout(links="vds"))
    with NXmxCollection(master) as data:
        read = data.read_frames(1, N_IMAGES)
        assert data.overflow_value == overflow
        assert data.max_valid_value == min(SATURATION, overflow - 1)
        assert read.dtype == (np.uint16 if dtype is np.uint8 else dtype)
        np.testing.assert_array_equal(read, frames)


def test_float64_frames_are_refused_naming_the_data_file(tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(np.float64), Layout())
    with pytest.raises(NXmxError, match=r"xtal_data_000001.h5: .* holds float64 frames"):
        NXmxCollection(master)


@pytest.mark.parametrize("links", ["vds", "interleaved_vds"])
def test_missing_vds_source_file_is_named(links: str, tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(), Layout(links=links))
    missing = sorted(tmp_path.glob("xtal_*0002.h5"))[0]
    missing.unlink()
    with pytest.raises(NXmxError, match=rf"{missing.name}: data file does not exist"):
        NXmxCollection(master)


def test_missing_wavelength_names_every_place_it_may_be(tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(), Layout(wavelength="photon_energy"))
    with h5py.File(master, "r+") as handle:
        del handle["/entry/instrument/detector/detectorSpecific/photon_energy"]
    with pytest.raises(NXmxError) as caught:
        NXmxCollection(master)
    for field in ("/entry/sample/beam/incident_wavelength", "photon_energy", "incident_energy"):
        assert field in str(caught.value)


def test_inconsistent_image_nr_low_is_named(tmp_path: Path) -> None:
    master = write_master(tmp_path, "xtal", frames_of(), Layout(image_nr_start=0))
    second = tmp_path / "xtal_data_000002.h5"
    with h5py.File(second, "r+") as handle:
        handle["/entry/data/data"].attrs["image_nr_low"] = np.uint64(7)
    with pytest.raises(NXmxError, match=r"image_nr_low is 7, expected 3"):
        NXmxCollection(master)


def test_nexgen_written_master_is_read(tmp_path: Path) -> None:
    """A master written by nexgen itself (Diamond's writer), VDS over our data files."""
    frames = frames_of(np.uint16)
    master = write_with_nexgen(tmp_path, frames)
    with NXmxCollection(master) as data:
        assert data.n_images == N_IMAGES
        assert data.geometry.wavelength_angstrom == pytest.approx(WAVELENGTH_A, rel=1e-6)
        assert data.geometry.detector_distance_mm == pytest.approx(DISTANCE_M * 1000)
        assert data.geometry.image_shape == SHAPE
        assert data.geometry.saturation_value == SATURATION
        assert data.data_files == [tmp_path / "xtal_000001.h5"]
        np.testing.assert_array_equal(data.read_frames(1, N_IMAGES), frames)
