"""What a job's results came from: code, kernel build, input files, parameters.

Written to every job folder (`provenance.json`) and to the LIMS job, so a result can be
traced to the exact code and data, and a rerun of its saved command checked against it.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect_beamline.about import DISTRIBUTION, build_commit

PROVENANCE_FILE = "provenance.json"
# CPU features a kernel may choose at load, and the ones worth knowing of the machine.
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f")
HASH_BLOCK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def collection_files(data_files: Sequence[str]) -> list[Path]:
    """The announced files and, for an NXmx master, its data files (`<stem>_data_*`)."""
    files: list[Path] = []
    for name in data_files:
        path = Path(name)
        files.append(path)
        stem = path.name.removesuffix("_master.h5")
        if stem != path.name:
            files += sorted(path.parent.glob(f"{stem}_data_*"))
    return files


def input_identity(data_files: Sequence[str]) -> dict[str, Any]:
    """Size and mtime of every input file, and the SHA-256 of the first (the master)."""
    files = collection_files(data_files)
    return {
        "files": [
            {"path": str(path), "size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
            for path in files
        ],
        "master": str(files[0]),
        "master_sha256": file_sha256(files[0]),
    }


@cache
def cpu_flags() -> list[str]:
    """The CPU_FLAGS this machine has (from /proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return [flag for flag in CPU_FLAGS if flag in flags]


@cache
def kernel_build() -> dict[str, Any]:
    """Each compiled kernel module's file hash, and the CPU paths chosen when it loaded."""
    import prefect_beamline.ext as ext

    folder = Path(ext.__file__).parent
    modules = {
        path.name.split(".")[0]: file_sha256(path)[:16] for path in sorted(folder.glob("_*.so"))
    }
    backproject = importlib.import_module("prefect_beamline.ext._backproject")
    return {
        "modules_sha256": modules,
        "chosen_at_load": {"backproject": "avx2" if backproject.HAS_AVX2 else "portable"},
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
    }


@cache
def code_identity() -> dict[str, Any]:
    """This package's version and commit, and the versions of the libraries results
    depend on."""
    libraries = {name: _version(name) for name in ("numpy", "h5py", "hdf5plugin", "prefect")}
    return {
        "package": DISTRIBUTION,
        "version": metadata.version(DISTRIBUTION),
        "commit": build_commit(),
        "python": platform.python_version(),
        "libraries": libraries,
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def job_provenance(data_files: Sequence[str], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Everything `provenance.json` holds for one job."""
    return {
        "code": code_identity(),
        "kernels": kernel_build(),
        "inputs": input_identity(data_files),
        "parameters": dict(parameters),
    }


def lims_summary(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance as short LIMS parameter values (each under 1 KiB)."""
    code, kernels, inputs = provenance["code"], provenance["kernels"], provenance["inputs"]
    return {
        "version": code["version"],
        "commit": code["commit"],
        "kernels": {"chosen_at_load": kernels["chosen_at_load"], "cpu_flags": kernels["cpu_flags"]},
        "master_sha256": inputs["master_sha256"],
        "input_files": len(inputs["files"]),
        "input_bytes": sum(item["size"] for item in inputs["files"]),
    }
