"""Start documents the gateway refused, so their stop documents can say why.

A refused request is not written anywhere (see `app`), so this memory is the gateway
process's own: bounded, and gone after a restart (the stop then gets the plain "no start
document was accepted" answer).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

MAX_REMEMBERED = 10_000


class RefusedStarts:
    """uid -> why its start document was refused, the newest MAX_REMEMBERED."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._reasons: OrderedDict[str, str] = OrderedDict()

    @contextlib.contextmanager
    def remembered(self, uid: object) -> Iterator[None]:
        """Remember why the block refused the start with this uid; forget a refusal
        once a start with the uid is accepted."""
        try:
            yield
        except Exception as error:
            status = getattr(error, "status_code", None)
            if isinstance(uid, str) and status is not None:
                self._remember(uid, f"{status}: {_describe(error)}")
            raise
        if isinstance(uid, str):
            self._reasons.pop(uid, None)

    def reason(self, uid: str) -> str | None:
        return self._reasons.get(uid)

    def _remember(self, uid: str, reason: str) -> None:
        self._reasons[uid] = reason
        self._reasons.move_to_end(uid)
        while len(self._reasons) > self.capacity:
            self._reasons.popitem(last=False)


def _describe(error: Any) -> str:
    message = getattr(error, "message", None)
    return str(message or getattr(error, "detail", None) or error)
