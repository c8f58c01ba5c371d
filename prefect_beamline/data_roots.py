"""Where data may be: the folders of `PREFECT_BEAMLINE_DATA_ROOTS`, and nothing outside.

The gateway refuses an announcement whose data files lie outside every root, and a flow
refuses to open a job on such a file (or a missing one) before it writes anything. Paths
are compared after `os.path.realpath` on both sides, so neither `..` nor a symlink leads
out of a root. With no roots configured nothing is accepted: closed by default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DATA_ROOTS_SETTING = "PREFECT_BEAMLINE_DATA_ROOTS"


class OutsideDataRoots(ValueError):
    """A path is not under any data root, or no root is configured; names both."""


def parse_data_roots(value: Any) -> list[Path]:
    """Roots from a path list (`/data:/dls`, os.pathsep-separated like PATH), a JSON list
    of strings, or a sequence; each must be absolute."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(os.pathsep)
    if not isinstance(value, Iterable):
        raise ValueError(f"{DATA_ROOTS_SETTING} must be a list of folders, got {value!r}")
    roots = [Path(str(item).strip()) for item in value if str(item).strip()]
    for root in roots:
        if not root.is_absolute():
            raise ValueError(f"{DATA_ROOTS_SETTING}: {str(root)!r} is not an absolute path")
    return roots


def describe_roots(roots: Sequence[Path]) -> str:
    """`PREFECT_BEAMLINE_DATA_ROOTS (/data, /dls)` for messages."""
    return f"{DATA_ROOTS_SETTING} ({', '.join(str(r) for r in roots)})"


def resolve_under_roots(path: str | Path, roots: Sequence[Path], *, what: str) -> Path:
    """The real path of `path` when it lies under a root; else OutsideDataRoots naming
    `what` (e.g. `data file`), the path and the roots."""
    if not roots:
        raise OutsideDataRoots(
            f"{what} {path} refused: {DATA_ROOTS_SETTING} is not set, so no data is "
            "accepted; set it to the folders the detectors write to"
        )
    real = Path(os.path.realpath(path))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    shown = f"{path} (really {real})" if str(real) != os.path.normpath(path) else str(path)
    raise OutsideDataRoots(f"{what} {shown} is not under {describe_roots(roots)}")


def require_data_files(
    paths: Iterable[str], roots: Sequence[Path], *, must_exist: bool, field: str = "data_files"
) -> None:
    """Every path under a root (and an existing file when `must_exist`); the error names
    the first offender as `field[i]`."""
    for index, path in enumerate(paths):
        what = f"{field}[{index}]: data file"
        real = resolve_under_roots(path, roots, what=what)
        if must_exist and not real.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist (under {describe_roots(roots)})")
