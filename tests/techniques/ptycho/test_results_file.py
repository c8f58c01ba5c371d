"""The reconstruction file is plottable NeXus: `@default` leads to an NXdata of the
object's amplitude and phase (and the complex object), with axes and pixel sizes in
metres; the probe alike."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.techniques.ptycho.results_file import (
    read_reconstruction,
    write_reconstruction,
)

PIXEL_M = (12e-9, 10e-9)  # (y, x)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    obj = (rng.random((40, 50)) * np.exp(1j * rng.uniform(-3, 3, (40, 50)))).astype(np.complex64)
    probe = np.exp(1j * rng.uniform(-1, 1, (16, 16))).astype(np.complex64)
    path = write_reconstruction(
        tmp_path / "reconstruction.h5", obj, probe, [3.0, 2.0], pixel_size_m=PIXEL_M
    )
    return path, obj, probe


def follow_default(handle: h5py.File) -> h5py.Group:
    """What a NeXus viewer plots: /@default -> entry/@default -> an NXdata."""
    entry = handle[handle.attrs["default"]]
    assert entry.attrs["NX_class"] == "NXentry"
    data = entry[entry.attrs["default"]]
    assert data.attrs["NX_class"] == "NXdata"
    return data


def test_default_chain_leads_to_amplitude_phase_and_complex_object(
    written: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, obj, _ = written
    with h5py.File(path, "r") as handle:
        data = follow_default(handle)
        assert data.name == "/entry/object"
        signal = data[data.attrs["signal"]]
        np.testing.assert_allclose(signal[()], np.abs(obj), rtol=1e-6)
        assert list(data.attrs["auxiliary_signals"]) == ["phase"]
        np.testing.assert_allclose(data["phase"][()], np.angle(obj), atol=1e-6)
        assert data["phase"].attrs["units"] == "rad"
        np.testing.assert_array_equal(data["complex"][()], obj)


def test_axes_and_pixel_sizes_are_datasets_in_metres(
    written: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, obj, _ = written
    with h5py.File(path, "r") as handle:
        data = follow_default(handle)
        assert list(data.attrs["axes"]) == ["y", "x"]
        for axis, size, step in (("y", obj.shape[0], PIXEL_M[0]), ("x", obj.shape[1], PIXEL_M[1])):
            coordinate = data[axis]
            assert coordinate.attrs["units"] == "m" and coordinate.shape == (size,)
            assert coordinate[1] - coordinate[0] == pytest.approx(step)
            pixel = data[f"{axis}_pixel_size"]
            assert pixel[()] == pytest.approx(step) and pixel.attrs["units"] == "m"


def test_probe_is_plottable_too_and_the_file_reads_back(
    written: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, obj, probe = written
    with h5py.File(path, "r") as handle:
        data = handle["/entry/probe"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "amplitude"
        np.testing.assert_allclose(data["amplitude"][()], np.abs(probe), rtol=1e-6)
    saved = read_reconstruction(path)
    np.testing.assert_array_equal(saved.obj, obj)
    assert saved.errors == [3.0, 2.0]
