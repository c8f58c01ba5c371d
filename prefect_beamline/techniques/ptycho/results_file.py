"""Files a ptychographic reconstruction leaves: the result HDF5 and the checkpoint.

Both hold the complex object and probe, the iteration count and the error of every
iteration, as plottable NeXus: `/@default` -> `/entry/@default` -> the NXdata `object`
(amplitude as its signal, phase as an auxiliary signal, the complex object beside them,
x/y axes and the pixel sizes as datasets in metres), and an NXdata `probe` alike, so
NeXus viewers (NeXpy, silx, h5web) plot the object when the file is opened. The raw
fields stay in the NXprocess `reconstruction` (hard links, no second copy).

The checkpoint also holds a key (scan file + the parameters that shape the
iterations), so a retried run resumes only from its own state. Writes go to a temporary
file renamed over the target, so a run killed mid-write leaves the previous checkpoint
whole, never a torn one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prefect_beamline.formats.errors import DataFileError

RECONSTRUCTION_FILE = "reconstruction.h5"
CHECKPOINT_FILE = "checkpoint.h5"


@dataclass(frozen=True)
class SavedReconstruction:
    """Object, probe and error history read back from a reconstruction or checkpoint."""

    obj: np.ndarray
    probe: np.ndarray
    iteration: int
    errors: list[float]
    key: str
    positions_px: np.ndarray | None = None  # (row, column) patch corners, final file only
    probe_modes: np.ndarray | None = None  # (modes, ny, nx) when more than one mode


def write_reconstruction(
    path: Path,
    obj: np.ndarray,
    probe: np.ndarray,
    errors: list[float],
    *,
    key: str = "",
    positions_px: np.ndarray | None = None,
    attributes: dict[str, Any] | None = None,
    pixel_size_m: tuple[float, float] | None = None,
) -> Path:
    """Write object, probe, errors (and the patch corners) to `path` atomically
    (temp file + rename). `pixel_size_m` is the object's (y, x) pixel size. A probe of
    several modes (modes, ny, nx) is written whole as `probe_modes`, its first (the
    strongest) as `probe`, so readers of one probe (viewers, `probe_from`) see that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(temporary, "w") as handle:
        handle.attrs["default"] = "entry"
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "object"
        group = entry.create_group("reconstruction")
        group.attrs["NX_class"] = "NXprocess"
        group.create_dataset("object", data=obj.astype(np.complex64))
        if probe.ndim == 3:
            group.create_dataset("probe_modes", data=probe.astype(np.complex64))
            probe = probe[0]
        group.create_dataset("probe", data=probe.astype(np.complex64))
        group.create_dataset("object_phase", data=np.angle(obj).astype(np.float32))
        group.create_dataset("object_amplitude", data=np.abs(obj).astype(np.float32))
        group.create_dataset("error", data=np.asarray(errors, dtype=np.float64))
        if positions_px is not None:
            corners = np.asarray(positions_px)
            kind = np.float64 if corners.dtype.kind == "f" else np.int64  # sub-pixel: float
            group.create_dataset("positions_px", data=corners.astype(kind))
        group.attrs["iteration"] = len(errors)
        group.attrs["key"] = key
        for name, value in (attributes or {}).items():
            group.attrs[name] = value
        _plottable(entry, "object", group, pixel_size_m)
        _plottable(entry, "probe", group, pixel_size_m)
    os.replace(temporary, path)
    return path


def _plottable(
    entry: h5py.Group, name: str, process: h5py.Group, pixel_size_m: tuple[float, float] | None
) -> None:
    """NXdata `entry/name` of the complex image `process/name`: amplitude (signal), phase
    (auxiliary signal, radians), the complex values, and y/x axes in metres (pixel
    indices when the pixel size is not known)."""
    values = process[name][()]
    data = entry.create_group(name)
    data.attrs["NX_class"] = "NXdata"
    data.attrs["signal"] = "amplitude"
    data.attrs["auxiliary_signals"] = ["phase"]
    data.attrs["axes"] = ["y", "x"]
    data.attrs["y_indices"] = 0
    data.attrs["x_indices"] = 1
    if name == "object":
        data["amplitude"] = process["object_amplitude"]
        data["phase"] = process["object_phase"]
    else:
        data.create_dataset("amplitude", data=np.abs(values).astype(np.float32))
        data.create_dataset("phase", data=np.angle(values).astype(np.float32))
    data["phase"].attrs["units"] = "rad"
    data["amplitude"].attrs["long_name"] = f"{name} amplitude"
    data["phase"].attrs["long_name"] = f"{name} phase (rad)"
    data["complex"] = process[name]
    ny, nx = values.shape[-2:]
    for axis, size, index in (("y", ny, 0), ("x", nx, 1)):
        if pixel_size_m is None:
            coordinate = data.create_dataset(axis, data=np.arange(size, dtype=np.float64))
            coordinate.attrs["units"] = "pixel"
            continue
        step = float(pixel_size_m[index])
        coordinate = data.create_dataset(axis, data=np.arange(size, dtype=np.float64) * step)
        coordinate.attrs["units"] = "m"
        pixel = data.create_dataset(f"{axis}_pixel_size", data=step)
        pixel.attrs["units"] = "m"


def read_reconstruction(path: Path) -> SavedReconstruction:
    """Read a reconstruction or checkpoint; DataFileError names the file and field."""
    if not path.exists():
        raise DataFileError(f"{path}: reconstruction file does not exist")
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("/entry/reconstruction")
            if not isinstance(group, h5py.Group):
                raise DataFileError(f"{path}: /entry/reconstruction is missing")
            fields = {}
            for name in ("object", "probe", "error"):
                item = group.get(name)
                if not isinstance(item, h5py.Dataset):
                    raise DataFileError(f"{path}: /entry/reconstruction/{name} is missing")
                fields[name] = item[()]
            return SavedReconstruction(
                obj=np.ascontiguousarray(fields["object"], dtype=np.complex64),
                probe=np.ascontiguousarray(fields["probe"], dtype=np.complex64),
                iteration=int(group.attrs.get("iteration", len(fields["error"]))),
                errors=[float(e) for e in fields["error"]],
                key=str(group.attrs.get("key", "")),
                positions_px=(
                    np.asarray(group["positions_px"][()]) if "positions_px" in group else None
                ),
                probe_modes=(
                    np.ascontiguousarray(group["probe_modes"][()], dtype=np.complex64)
                    if "probe_modes" in group
                    else None
                ),
            )
    except OSError as error:
        raise DataFileError(f"{path}: not a readable HDF5 file ({error})") from None


def read_checkpoint(folder: Path, key: str) -> SavedReconstruction | None:
    """The most advanced state in `folder` written for `key` (the checkpoint, or the
    final reconstruction of an attempt that finished iterating), else None."""
    found: SavedReconstruction | None = None
    for name in (CHECKPOINT_FILE, RECONSTRUCTION_FILE):
        path = folder / name
        if not path.exists():
            continue
        saved = read_reconstruction(path)
        if saved.key == key and (found is None or saved.iteration > found.iteration):
            found = saved
    return found
