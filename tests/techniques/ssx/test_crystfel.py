"""The CrystFEL files: a CXI file in Cheetah/CrystFEL's layout with the hits and their
peak tables, the event list, and a geometry that names that layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from prefect_beamline.ext.peakfinder import PeakTable
from prefect_beamline.formats.nxmx import DetectorGeometry
from prefect_beamline.techniques.ssx import crystfel

GEOMETRY = DetectorGeometry(
    wavelength_angstrom=1.0,
    detector_distance_mm=120.0,
    beam_centre_x_px=100.5,
    beam_centre_y_px=80.25,
    pixel_size_x_mm=0.075,
    pixel_size_y_mm=0.075,
    saturation_value=1_000_000,
    image_shape=(160, 200),
)


def two_hits() -> tuple[list[np.ndarray], PeakTable]:
    frames = [np.full((160, 200), value, dtype=np.uint32) for value in (1, 2)]
    peaks = PeakTable(
        n_peaks=np.array([2, 5]),
        x=np.array([[10.5, 20.25, 0, 0], [1, 2, 3, 4]], dtype=np.float64),
        y=np.array([[30.0, 40.0, 0, 0], [5, 6, 7, 8]], dtype=np.float64),
        intensity=np.array([[100.0, 200.0, 0, 0], [9, 10, 11, 12]], dtype=np.float64),
        n_pixels=np.array([[3, 4, 0, 0], [1, 1, 1, 1]], dtype=np.int32),
    )
    return frames, peaks


def test_cxi_holds_frames_and_peak_tables_where_crystfel_reads_them(tmp_path: Path) -> None:
    frames, peaks = two_hits()
    path = crystfel.write_cxi(
        tmp_path / "hits.cxi", iter(frames), [7, 12], peaks, (160, 200), np.dtype(np.uint32)
    )
    with h5py.File(path, "r") as cxi:
        assert cxi["/entry_1/data_1/data"].shape == (2, 160, 200)
        assert cxi["/entry_1/data_1/data"][1, 0, 0] == 2
        assert list(cxi["/entry_1/result_1/nPeaks"][()]) == [2, 4]  # 5 found, 4 stored
        assert cxi["/entry_1/result_1/peakXPosRaw"].dtype == np.float32
        assert list(cxi["/entry_1/result_1/imageNumber"][()]) == [7, 12]
    first, second = crystfel.read_cxi_peaks(path)
    np.testing.assert_allclose(first, [[10.5, 30.0, 100.0], [20.25, 40.0, 200.0]])
    assert second.shape == (4, 3)


def test_event_list_and_geometry_point_at_the_cxi_layout(tmp_path: Path) -> None:
    events = crystfel.write_event_list(tmp_path / "hits.lst", tmp_path / "hits.cxi", 3)
    assert events.read_text().splitlines() == ["hits.cxi //0", "hits.cxi //1", "hits.cxi //2"]
    geom = crystfel.write_geometry(tmp_path / "detector.geom", GEOMETRY)
    fields = dict(line.split(" = ", 1) for line in geom.read_text().splitlines() if " = " in line)
    assert fields["data"] == "/entry_1/data_1/data"
    assert fields["peak_list"] == "/entry_1/result_1"
    assert fields["peak_list_type"] == "cxi"
    assert (fields["dim0"], fields["dim1"], fields["dim2"]) == ("%", "ss", "fs")
    assert float(fields["clen"]) == 0.12
    assert abs(float(fields["res"]) - 1000.0 / 0.075) < 1e-3
    assert float(fields["photon_energy"].split()[0]) == 12398.4198
    assert (fields["p0/max_fs"], fields["p0/max_ss"]) == ("199", "159")
    assert float(fields["p0/corner_x"]) == -100.5
