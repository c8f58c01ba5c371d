"""Our own writers of NXmx masters laid out as the field writes them (test fixtures).

Each follows a public layout: DECTRIS FileWriter1 (`data_NNNNNN` external links, EIGER1
or EIGER2 detectorSpecific fields), DECTRIS FileWriter2 (one `/entry/data/data` VDS,
`distance`, the mask under `threshold_1_channel`), and Diamond's nexgen/Odin (`.nxs`
master whose `/entry/data/data` VDS maps the data files, possibly interleaved by Odin's
several writers). Frames are given, so a test compares what a reader returns with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

PIXEL_M = 75e-6
DISTANCE_M = 0.15
WAVELENGTH_A = 0.9763
BEAM_PX = (30.25, 20.75)
SATURATION = 40_000
HC_EV_ANGSTROM = 12398.419843320026


@dataclass(frozen=True)
class Layout:
    """How a master spells things (each switch is one field writer's habit)."""

    links: str = "filewriter1"  # "filewriter1" | "vds" | "interleaved_vds" | "nexgen"
    distance_field: str = "detector_distance"  # or "distance" (FileWriter2)
    wavelength: str = "instrument"  # "instrument" | "sample" | "photon_energy" | "incident_energy"
    saturation: str = "saturation_value"  # or "eiger1_module" (count cutoff per module)
    mask: str = "detectorSpecific"  # or "threshold_1_channel" (FileWriter2) | "nxmx"
    image_nr_start: int = 1
    images_per_file: int = 3


def _scalar(group: h5py.Group, name: str, value: object, units: str | None = None) -> None:
    dataset = group.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = units


def _data_files(directory: Path, stem: str, frames: np.ndarray, layout: Layout) -> list[Path]:
    """Data files of `images_per_file` frames each, as /entry/data/data (nexgen: /data)."""
    paths = []
    for index, start in enumerate(range(0, len(frames), layout.images_per_file), start=1):
        block = frames[start : start + layout.images_per_file]
        path = directory / f"{stem}_{index:06d}.h5"
        with h5py.File(path, "w") as handle:
            name = "data" if layout.links in ("nexgen", "interleaved_vds") else "/entry/data/data"
            dataset = handle.create_dataset(name, data=block, chunks=(1, *block.shape[1:]))
            dataset.attrs["image_nr_low"] = np.uint64(layout.image_nr_start + start)
            dataset.attrs["image_nr_high"] = np.uint64(
                layout.image_nr_start + start + len(block) - 1
            )
        paths.append(path)
    return paths


def _vds(
    group: h5py.Group, paths: list[Path], frames: np.ndarray, source_name: str, stride: int = 1
) -> None:
    """`group/data` as a VDS: file i holds frames i, i+stride, ... (stride 1: consecutive)."""
    n, ny, nx = frames.shape
    layout = h5py.VirtualLayout(shape=(n, ny, nx), dtype=frames.dtype)
    if stride == 1:
        start = 0
        for path in paths:
            with h5py.File(path, "r") as handle:
                count = handle[source_name].shape[0]
            layout[start : start + count] = h5py.VirtualSource(
                path.name, source_name, shape=(count, ny, nx)
            )
            start += count
    else:
        for index, path in enumerate(paths):
            count = len(range(index, n, stride))
            layout[index::stride] = h5py.VirtualSource(
                path.name, source_name, shape=(count, ny, nx)
            )
    group.create_virtual_dataset("data", layout, fillvalue=0)


def write_master(directory: Path, name: str, frames: np.ndarray, layout: Layout) -> Path:
    """Data files and a master for `frames` (n, ny, nx) laid out as `layout` says."""
    directory.mkdir(parents=True, exist_ok=True)
    _, ny, nx = frames.shape
    interleaved = layout.links == "interleaved_vds"
    if interleaved:  # Odin: writer i holds frames i, i + n_writers, ...
        n_writers = 2
        paths = []
        for index in range(n_writers):
            path = directory / f"{name}_{index + 1:06d}.h5"
            with h5py.File(path, "w") as handle:
                handle.create_dataset("data", data=frames[index::n_writers])
            paths.append(path)
    else:
        paths = _data_files(
            directory, name + ("" if layout.links == "nexgen" else "_data"), frames, layout
        )
    suffix = ".nxs" if layout.links in ("nexgen", "interleaved_vds") else "_master.h5"
    master = directory / f"{name}{suffix}"
    with h5py.File(master, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        if layout.links == "filewriter1":
            for index, path in enumerate(paths, start=1):
                data[f"data_{index:06d}"] = h5py.ExternalLink(path.name, "/entry/data/data")
        elif layout.links == "vds":
            _vds(data, paths, frames, "/entry/data/data")
        elif layout.links == "nexgen":
            _vds(data, paths, frames, "data")
        else:
            _vds(data, paths, frames, "data", stride=2)
        instrument = entry.create_group("instrument")
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        specific = detector.create_group("detectorSpecific")
        energy_ev = HC_EV_ANGSTROM / WAVELENGTH_A
        if layout.wavelength == "instrument":
            _scalar(
                instrument.create_group("beam"), "incident_wavelength", WAVELENGTH_A, "angstrom"
            )
        elif layout.wavelength == "sample":
            sample_beam = entry.create_group("sample").create_group("beam")
            _scalar(sample_beam, "incident_wavelength", WAVELENGTH_A / 10.0, "nm")
        elif layout.wavelength == "incident_energy":
            _scalar(instrument.create_group("beam"), "incident_energy", energy_ev / 1000.0, "keV")
        else:
            _scalar(specific, "photon_energy", np.float32(energy_ev), "eV")
        _scalar(detector, layout.distance_field, DISTANCE_M, "m")
        _scalar(detector, "beam_center_x", BEAM_PX[0], "pixel")
        _scalar(detector, "beam_center_y", BEAM_PX[1], "pixel")
        _scalar(detector, "x_pixel_size", PIXEL_M, "m")
        _scalar(detector, "y_pixel_size", PIXEL_M, "m")
        if layout.saturation == "saturation_value":
            _scalar(detector, "saturation_value", np.int64(SATURATION))
        else:
            module = specific.create_group("detectorModule_000")
            _scalar(module, "countrate_correction_count_cutoff", np.uint32(SATURATION))
        mask = np.zeros((ny, nx), dtype=np.uint32)
        mask[:, nx // 2] = 1  # a gap column
        mask[3, 4] = 2  # a dead pixel
        if layout.mask == "threshold_1_channel":
            detector.create_group("threshold_1_channel").create_dataset("pixel_mask", data=mask)
        elif layout.mask == "nxmx":
            detector.create_dataset("pixel_mask", data=mask)
        else:
            specific.create_dataset("pixel_mask", data=mask)
    return master
