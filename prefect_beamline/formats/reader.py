"""What every reader of a data file shares: it is used in `with` and closes its files."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class FileReader:
    """Base of the readers: `with Reader(path) as data:` closes every file it opened."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
