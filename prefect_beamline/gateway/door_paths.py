"""The gateway's data-roots check at the door, with folders' real paths remembered briefly.

`data_roots.require_data_files` resolves every path with `os.path.realpath`: one lstat per
path component, ~7 system calls for a typical data file, on each announcement. A DAQ
writes many files into one folder, so `DoorPathCheck` remembers each folder's real path
for `ttl_s` seconds and lstats only the file itself (a file that is a symlink is resolved
in full). A path it finds outside every root is checked again, uncached, by
`require_data_files`, which words the refusal; so a cached answer can only accept, and
only a path whose folder was under a root within the last `ttl_s`. The flows check every
file again, uncached, before they open it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from prefect_beamline.data_roots import require_data_files

FOLDER_TTL_S = 1.0
MAX_FOLDERS = 10_000


class DoorPathCheck:
    """`check(paths)`: OutsideDataRoots naming the first path outside every root."""

    def __init__(self, roots: Sequence[Path], ttl_s: float = FOLDER_TTL_S) -> None:
        self.roots = list(roots)
        self.ttl_s = ttl_s
        self._folders: dict[str, tuple[float, str]] = {}  # folder -> (expires, real path)
        self._roots: tuple[float, list[str]] = (0.0, [])

    def check(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        now = time.monotonic()
        if not all(self._under_a_root(path, now) for path in paths):
            require_data_files(paths, self.roots, must_exist=False)

    def _under_a_root(self, path: str, now: float) -> bool:
        real = self._realpath(path, now)
        return real is not None and any(
            real == root or real.startswith(root.rstrip(os.sep) + os.sep)
            for root in self._real_roots(now)
        )

    def _realpath(self, path: str, now: float) -> str | None:
        """The real path with the folder's from the cache; None when it must be resolved
        in full (relative path, `.`/`..` as the name, the file itself a symlink)."""
        folder, name = os.path.split(path)
        if not os.path.isabs(path) or name in ("", ".", ".."):
            return None
        cached = self._folders.get(folder)
        if cached is None or cached[0] < now:
            if len(self._folders) >= MAX_FOLDERS:
                self._folders.clear()
            cached = (now + self.ttl_s, os.path.realpath(folder))
            self._folders[folder] = cached
        real = os.path.join(cached[1], name)
        try:
            if stat.S_ISLNK(os.lstat(real).st_mode):
                return None
        except OSError:
            pass  # not there yet: nothing to follow
        return real

    def _real_roots(self, now: float) -> list[str]:
        expires, roots = self._roots
        if expires < now:
            roots = [os.path.realpath(root) for root in self.roots]
            self._roots = (now + self.ttl_s, roots)
        return roots
