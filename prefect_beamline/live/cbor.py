"""CBOR decoding (RFC 8949) that hands byte strings out as views of the message.

A Stream V2 image message is a few dozen small items around one 4-5 MB byte string,
the compressed frame. cbor2 copies that string into a new `bytes` (fresh pages, so page
faults too: 1-5 ms of the receiving thread's CPU per 16 Mpixel frame); here it stays a
`memoryview` of the received ZeroMQ message, which the decoder reads in place. The rest
of the message is small, so a plain Python walk over it costs microseconds.

Tags are handed to `tag_hook(tag, value)` (the value already decoded); the standard
date tags 0 and 1 become datetimes, as cbor2 makes them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

TagHook = Callable[[int, Any], Any]
_BREAK = object()  # the "break" stop code of an indefinite-length item
_FLOATS = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
_SIMPLE = {20: False, 21: True, 22: None, 23: None}


class CBORError(ValueError):
    """Bytes that are not one well-formed CBOR item."""


def default_tags(tag: int, value: Any) -> Any:
    """Dates (tags 0 and 1) as datetimes; any other tag as (tag, value)."""
    if tag == 0 and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if tag == 1 and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return (tag, value)


class _Decoder:
    def __init__(self, data: memoryview, tag_hook: TagHook) -> None:
        self.data = data
        self.at = 0
        self.tag_hook = tag_hook

    def take(self, size: int) -> memoryview:
        end = self.at + size
        if end > len(self.data):
            raise CBORError(f"item runs past the end ({end} > {len(self.data)} bytes)")
        view = self.data[self.at : end]
        self.at = end
        return view

    def argument(self, info: int) -> int | None:
        """The head's argument (a length, a value or a tag); None: indefinite length."""
        if info < 24:
            return info
        if info == 31:
            return None
        if info > 27:
            raise CBORError(f"reserved additional information {info}")
        return int.from_bytes(self.take(1 << (info - 24)), "big")

    def item(self) -> Any:
        head = self.take(1)[0]
        major, info = head >> 5, head & 31
        if major == 7:
            return self.simple(info)
        length = self.argument(info)
        if major == 0 or major == 1:
            if length is None:
                raise CBORError("an integer cannot have an indefinite length")
            return length if major == 0 else -1 - length
        if major == 2 or major == 3:
            raw = self.take(length) if length is not None else self.chunks(major)
            return raw if major == 2 else str(raw, "utf-8")
        if major == 4:
            return self.array(length)
        if major == 5:
            return self.map(length)
        if length is None:
            raise CBORError("a tag cannot have an indefinite length")
        return self.tag_hook(length, self.item())

    def simple(self, info: int) -> Any:
        if info in _SIMPLE:
            return _SIMPLE[info]
        if info in _FLOATS:
            code, size = _FLOATS[info]
            return struct.unpack(code, self.take(size))[0]
        if info == 31:
            return _BREAK
        raise CBORError(f"unsupported simple value {info}")

    def chunks(self, major: int) -> memoryview:
        """An indefinite-length string: its definite-length chunks joined (a copy)."""
        parts = []
        while (part := self.item()) is not _BREAK:
            if major == 2 and not isinstance(part, memoryview):
                raise CBORError("a chunk of an indefinite byte string is not a byte string")
            if major == 3 and not isinstance(part, str):
                raise CBORError("a chunk of an indefinite text string is not a text string")
            parts.append(part.encode() if isinstance(part, str) else part)
        return memoryview(b"".join(parts))

    def element(self) -> Any:
        """An item inside a definite-length array or map (where a break is an error)."""
        item = self.item()
        if item is _BREAK:
            raise CBORError("a break code inside a definite-length array or map")
        return item

    def array(self, length: int | None) -> list[Any]:
        if length is not None:
            return [self.element() for _ in range(length)]
        items = []
        while (item := self.item()) is not _BREAK:
            items.append(item)
        return items

    def map(self, length: int | None) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        count = 0
        while length is None or count < length:
            key = self.item()
            if key is _BREAK and length is None:
                return result
            if key is _BREAK:
                raise CBORError("a break code inside a definite-length map")
            if isinstance(key, memoryview):
                key = bytes(key)  # a map key must be hashable
            result[key] = self.element()
            count += 1
        return result


def loads(payload: bytes | memoryview, tag_hook: TagHook = default_tags) -> Any:
    """The one CBOR item of `payload`; byte strings as memoryviews into `payload`."""
    decoder = _Decoder(memoryview(payload).cast("B"), tag_hook)
    value = decoder.item()
    if value is _BREAK:
        raise CBORError("a break code outside an indefinite-length item")
    if decoder.at != len(decoder.data):
        raise CBORError(f"{len(decoder.data) - decoder.at} bytes after the item")
    return value
