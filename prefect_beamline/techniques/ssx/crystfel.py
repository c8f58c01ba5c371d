"""Hits for CrystFEL: a CXI file of hit frames with their peak tables, a `.lst` of hit
events, and a `.geom` geometry file that reads both.

The CXI layout is the one Cheetah writes and CrystFEL's `peak_list_type = cxi` reads:
frames in `/entry_1/data_1/data` (n_hits, ny, nx), and in `/entry_1/result_1` the peak
table `nPeaks` (n_hits) and `peakXPosRaw`, `peakYPosRaw`, `peakTotalIntensity`
(n_hits, max_peaks), positions in pixel index coordinates (CrystFEL adds the half-pixel
shift itself). Each event of the `.lst` is `<file> //<frame index>`, as
`indexamajig -i hits.lst -g detector.geom --peaks=cxi` takes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from prefect_beamline.ext.peakfinder import PeakTable
from prefect_beamline.formats.nxmx import DetectorGeometry

CXI_FILE = "hits.cxi"
LIST_FILE = "hits.lst"
GEOMETRY_FILE = "detector.geom"
DATA = "/entry_1/data_1/data"
RESULT = "/entry_1/result_1"
_HC_EV_ANGSTROM = 12398.419843


def write_cxi(
    path: Path,
    frames: Iterable[np.ndarray],
    image_numbers: Sequence[int],
    peaks: PeakTable,
    frame_shape: tuple[int, int],
    dtype: np.dtype,
) -> Path:
    """The CXI file of the hits: frames streamed in one at a time, then the peak table
    (row i of `peaks` belongs to `image_numbers[i]`)."""
    n_hits = len(image_numbers)
    max_peaks = peaks.x.shape[1] if n_hits else 1
    with h5py.File(path, "w") as cxi:
        cxi["cxi_version"] = np.int32(150)
        entry = cxi.create_group("entry_1")
        data = entry.create_group("data_1").create_dataset(
            "data",
            shape=(n_hits, *frame_shape),
            dtype=dtype,
            chunks=(1, *frame_shape),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        for index, frame in enumerate(frames):
            data[index] = frame
        result = entry.create_group("result_1")
        stored = np.minimum(peaks.n_peaks, max_peaks).astype(np.int32)
        result["nPeaks"] = stored
        for name, values in (
            ("peakXPosRaw", peaks.x),
            ("peakYPosRaw", peaks.y),
            ("peakTotalIntensity", peaks.intensity),
            ("peakNPixels", peaks.n_pixels),
        ):
            result.create_dataset(
                name, data=np.asarray(values).reshape(n_hits, max_peaks).astype(np.float32)
            )
        result["imageNumber"] = np.asarray(image_numbers, dtype=np.int64)
    return path


def write_event_list(path: Path, cxi_file: Path, n_hits: int) -> Path:
    """`hits.lst`: one line per hit event, `<cxi file> //<index>`."""
    path.write_text("".join(f"{cxi_file.name} //{index}\n" for index in range(n_hits)))
    return path


def write_geometry(path: Path, geometry: DetectorGeometry) -> Path:
    """A one-panel CrystFEL geometry for the detector, reading the CXI file's layout."""
    ny, nx = geometry.image_shape
    lines = [
        "; CrystFEL geometry written by prefect-beamline (serial crystallography)",
        f"photon_energy = {_HC_EV_ANGSTROM / geometry.wavelength_angstrom:.4f} eV",
        f"clen = {geometry.detector_distance_mm / 1000.0:.6f}",
        f"res = {1000.0 / geometry.pixel_size_x_mm:.4f}",
        "adu_per_photon = 1",
        f"max_adu = {geometry.saturation_value}",
        f"flag_morethan = {geometry.saturation_value}",
        f"data = {DATA}",
        "dim0 = %",
        "dim1 = ss",
        "dim2 = fs",
        f"peak_list = {RESULT}",
        "peak_list_type = cxi",
        "",
        "p0/min_fs = 0",
        f"p0/max_fs = {nx - 1}",
        "p0/min_ss = 0",
        f"p0/max_ss = {ny - 1}",
        f"p0/corner_x = {-geometry.beam_centre_x_px:.4f}",
        f"p0/corner_y = {-geometry.beam_centre_y_px:.4f}",
        "p0/fs = +1.0x",
        "p0/ss = +1.0y",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def read_cxi_peaks(path: Path) -> list[np.ndarray]:
    """Per event, the (n, 3) x, y, intensity rows of its peak table, as CrystFEL reads
    them (the first nPeaks entries of each row)."""
    with h5py.File(path, "r") as cxi:
        result = cxi[RESULT]
        counts = result["nPeaks"][()]
        columns = [
            result[name][()] for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity")
        ]
    return [
        np.column_stack([column[index, :count] for column in columns])
        for index, count in enumerate(counts)
    ]
