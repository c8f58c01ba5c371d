"""Rows staged once per run, so that each chunk task reads only the rows it reconstructs.

Detectors write a scan frame by frame and facility files store it that way: one
(compressed) HDF5 chunk per frame, or per band of rows wider than a chunk task's.
Reading the rows of one task from such a file decompresses every frame whole, so N
tasks would read the scan N times. When the scan's storage chunks span more detector
rows than a task reconstructs, the flow first copies the rows to reconstruct, reading
each frame once, into a Data Exchange file in the job's folder (`sinograms.h5`),
chunked by (frames, the rows of one task, columns), with the mean flat and dark beside
them; each task then reads its own rows of that file and nothing else. A scan stored
contiguously, or in chunks no taller than a task's rows, is read in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from pydantic import BaseModel

from prefect_beamline.formats.nxtomo import (
    DXCHANGE_ANGLES,
    DXCHANGE_DARKS,
    DXCHANGE_DATA,
    DXCHANGE_FLATS,
    TomoScan,
)

STAGED_FILE = "sinograms.h5"
FRAMES_PER_READ = 16  # frames held in memory while staging (16 x 2048² x 2 B = 128 MB)


class StagedRows(BaseModel):
    """A staged copy of detector rows first_row.. of a scan (Data Exchange layout)."""

    path: str
    first_row: int


def needs_staging(scan: TomoScan, rows_per_task: int) -> bool:
    """True when one storage chunk of the projections spans more detector rows than a
    task reconstructs: reading a task's rows in place would read other tasks' rows."""
    return scan.rows_per_storage_chunk > rows_per_task


def stage_rows(
    scan: TomoScan, first_row: int, stop_row: int, rows_per_task: int, folder: Path
) -> StagedRows:
    """Copy rows first_row..stop_row-1 of every projection, and their mean flat and
    dark, into `folder/sinograms.h5`, reading each frame of the scan once. Written under
    a temporary name and renamed, so a half-written file is never read."""
    n_rows = stop_row - first_row
    flat, dark = scan.flat_and_dark(first_row, stop_row)
    target = folder / STAGED_FILE
    partial = folder / f".{STAGED_FILE}.{os.getpid()}.partial"
    chunks = (min(FRAMES_PER_READ, scan.n_projections), min(rows_per_task, n_rows), scan.n_columns)
    with h5py.File(partial, "w") as out:
        data = out.create_dataset(
            DXCHANGE_DATA,
            shape=(scan.n_projections, n_rows, scan.n_columns),
            dtype=scan.dtype,
            chunks=chunks,
            **hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE),
        )
        for start in range(0, scan.n_projections, FRAMES_PER_READ):
            indices = list(range(start, min(start + FRAMES_PER_READ, scan.n_projections)))
            data[indices[0] : indices[-1] + 1] = scan.read_projections(indices)[
                :, first_row:stop_row
            ]
        out.create_dataset(DXCHANGE_FLATS, data=flat[np.newaxis])
        out.create_dataset(DXCHANGE_DARKS, data=dark[np.newaxis])
        out.create_dataset(DXCHANGE_ANGLES, data=scan.angles_deg).attrs["units"] = "degree"
        out.attrs["source_file"] = str(scan.path)
        out.attrs["first_row"] = first_row
    partial.replace(target)
    return StagedRows(path=str(target), first_row=first_row)
