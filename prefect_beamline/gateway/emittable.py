"""Accepted means emittable: what a body must be for its event to reach Prefect.

A 202 promises the DAQ its announcement will become a Prefect event. Valid JSON can still
break that promise later, in the drainer or in Prefect's server, so the gateway refuses
at the door (422, naming the field by its path in the body) every value that could not
make the trip:

- non-finite numbers, however spelled: `NaN`, `Infinity`, and literals such as `1e400`
  that Python reads as infinity (JSON has no infinity; `json.dumps(allow_nan=False)`
  and Prefect's encoder refuse them);
- unpaired UTF-16 surrogates (`"\\ud800"`), in keys and in values: they cannot be
  encoded as UTF-8;
- U+0000 in keys and values: Prefect's server loses such an event after answering 204
  (measured with Prefect 3.9.1 on SQLite), and PostgreSQL text and JSONB cannot hold it;
- integers outside the signed 64-bit range: orjson, which Prefect's server uses, stops at
  2**64 - 1 (Prefect loses the event) and SQL BIGINT at 2**63 - 1;
- nesting deeper than `MAX_DEPTH` levels: Prefect wraps the body two levels deeper and
  loses (or answers 500 for) events nested about 250 deep, where orjson stops.

Field-level bounds live with their fields: LIMS ids and image numbers fit SQL INTEGER
(`prefect_beamline.events.LIMS_INTEGER_MAX`), a collection's timestamp has a UTC form, a
Bluesky document's `time` lies between 1970 and 9999. After validation,
`encode_for_prefect` encodes the Prefect event as the drainer will send it (the drainer
then sends those very bytes), and the gateway refuses it (413) if Prefect would drop it
for its size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from prefect_beamline.events import CollectionEvent, encode_prefect_event

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays a body may have; the body itself is level 1."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_REPORTED_FLAWS = 20
"""A body with thousands of bad values is refused naming the first few."""
RECEIVED_MARGIN_BYTES = 1024
"""Room for what Prefect's server adds to an event (its `received` time) before it
measures the event's size."""

_NOT_FINITE = (
    "{value} is not a finite number (JSON has no NaN or infinity; a literal such as 1e400 "
    "overflows to infinity)"
)
_NOT_INT64 = "integer out of range: must lie in [-2**63, 2**63 - 1], got {value}"
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone: json.loads joins the pairs


def flaws(document: Any, max_depth: int = MAX_DEPTH) -> list[dict[str, str]]:
    """Every value in a parsed JSON document that Prefect could not take, as
    `{"field", "message", "type"}` (the shape of the gateway's 422 details), at most
    `MAX_REPORTED_FLAWS`; empty when the document is emittable."""
    found: list[dict[str, str]] = []
    for path, message, kind in _walk(document, max_depth):
        found.append({"field": path or "(body)", "message": message, "type": kind})
        if len(found) == MAX_REPORTED_FLAWS:
            break
    return found


def too_deep(max_depth: int = MAX_DEPTH) -> dict[str, str]:
    """The flaw of a body nested beyond what even Python's parser reads."""
    return {"field": "(body)", "message": _depth_message(max_depth), "type": "json_depth"}


def prefect_event_limit() -> int:
    """The largest encoded event Prefect's server publishes: its
    `PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES` (1.5 MB; it drops a larger event after
    answering 204), less room for what it adds on receipt. Read once per gateway."""
    from prefect.settings import PREFECT_EVENTS_MAXIMUM_SIZE_BYTES

    return int(PREFECT_EVENTS_MAXIMUM_SIZE_BYTES.value()) - RECEIVED_MARGIN_BYTES


class NotEmittable(ValueError):
    """Prefect would not take this event (too large, not encodable); says why."""


def encode_for_prefect(event: CollectionEvent, limit_bytes: int) -> bytes:
    """The Prefect event exactly as the drainer sends it (`encode_prefect_event`), or
    NotEmittable. Prefect measures its own compact UTF-8 encoding, which is never longer
    than this one (its floats are as short or shorter), so the bound is safe."""
    try:
        encoded = encode_prefect_event(event)
    except (ValueError, UnicodeEncodeError) as error:  # flaws() should have caught it
        raise NotEmittable(f"the event cannot be encoded as JSON for Prefect: {error}") from None
    if len(encoded) > limit_bytes:
        raise NotEmittable(
            f"the Prefect event would be {len(encoded)} bytes; Prefect takes at most "
            f"{limit_bytes} (PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES less "
            f"{RECEIVED_MARGIN_BYTES})"
        )
    return encoded


def _walk(document: Any, max_depth: int) -> Iterator[tuple[str, str, str]]:
    """(path, message, type) of each flaw, depth first, without recursion (a body may be
    deep). Paths are kept as tuples and written out only for a flaw."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(document, ())]
    while stack:
        container, path = stack.pop()
        if not isinstance(container, dict | list):
            problem = _scalar_problem(container)
            if problem:
                yield _path(path), *problem
            continue
        if len(path) >= max_depth:
            yield _path(path), _depth_message(max_depth), "json_depth"
            continue
        if isinstance(container, dict):
            for key in container:
                key_problem = _text_problem(key)
                if key_problem:
                    yield _path((*path, key)), f"key {key_problem[0]}", key_problem[1]
            items: Iterable[tuple[Any, Any]] = container.items()
        else:
            items = enumerate(container)
        nested = []
        for key, value in items:
            if isinstance(value, dict | list):
                nested.append((value, (*path, key)))
            else:
                problem = _scalar_problem(value)
                if problem:
                    yield _path((*path, key)), *problem
        stack.extend(reversed(nested))


def _scalar_problem(value: Any) -> tuple[str, str] | None:
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return _NOT_FINITE.format(value=value), "finite_number"
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return _NOT_INT64.format(value=_short(value)), "int64_range"
    return None


def _text_problem(text: str) -> tuple[str, str] | None:
    """(message, type) when a key or string value cannot be stored and sent."""
    if "\x00" in text:
        return "contains U+0000 (NUL), which PostgreSQL cannot store", "nul_character"
    if _SURROGATE.search(text):
        return "contains an unpaired UTF-16 surrogate (not encodable as UTF-8)", "unicode_surrogate"
    return None


def _path(parts: tuple[Any, ...]) -> str:
    """`a.b.0`, each part escaped so the answer itself is valid UTF-8 JSON."""
    return ".".join(
        str(part).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
        for part in parts
    )


def _short(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"


def _depth_message(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels of objects and arrays"
