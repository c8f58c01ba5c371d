"""A master written by nexgen itself (Diamond's NXmx writer) over one data file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from nexgen.nxs_utils import (
    Attenuator,
    Axis,
    Beam,
    Detector,
    EigerDetector,
    Goniometer,
    Source,
    TransformationType,
)
from nexgen.nxs_write.nxmx_writer import NXmxFileWriter

from tests.formats.nxmx_layouts import BEAM_PX, DISTANCE_M, SATURATION, WAVELENGTH_A


def write_with_nexgen(directory: Path, frames: np.ndarray) -> Path:
    """`xtal.nxs` by nexgen's NXmxFileWriter (its VDS over `xtal_000001.h5`, which holds
    `frames` as nexgen's data files do: a top-level `data` dataset)."""
    n, ny, nx = frames.shape
    with h5py.File(directory / "xtal_000001.h5", "w") as handle:
        handle.create_dataset("data", data=frames, chunks=(1, ny, nx))
    omega = Axis("omega", ".", TransformationType.ROTATION, (-1, 0, 0), 0.0, 0.1, n)
    det_z = Axis("det_z", ".", TransformationType.TRANSLATION, (0, 0, 1), DISTANCE_M * 1000)
    detector = Detector(
        EigerDetector("Eiger 2X 4M", (ny, nx), "Si", SATURATION, -1),
        [det_z],
        list(BEAM_PX),
        0.01,
        [(-1, 0, 0), (0, -1, 0)],
    )
    scan = {"omega": np.arange(n) * 0.1}
    writer = NXmxFileWriter(
        directory / "xtal.nxs",
        Goniometer([omega], scan),
        detector,
        Source("I03"),
        Beam(WAVELENGTH_A),
        Attenuator(1.0),
        n,
    )
    writer.write(image_filename="xtal")
    writer.write_vds(vds_shape=(n, ny, nx), vds_dtype=frames.dtype)
    return directory / "xtal.nxs"
