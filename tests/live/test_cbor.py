"""The zero-copy CBOR decoder against cbor2 (the encoder, and the reference decoder)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cbor2
import numpy as np
import pytest

from prefect_beamline.live.cbor import CBORError, loads

VALUES: list[Any] = [
    0,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**32,
    2**64 - 1,
    -1,
    -24,
    -25,
    -(2**64),
    1.5,
    -0.0,
    3.4e38,
    1e300,
    float("inf"),
    "",
    "Eiger 16M détecteur",
    b"",
    b"\x00\x01",
    True,
    False,
    None,
    [],
    [1, [2, [3, "x"]], {"a": None}],
    {"type": "image", "series_id": 7, "real_time": [20000, 10000000], "data": {"x": 1.0}},
    {1: "int key", "nested": {"deeper": [b"bytes", 2.25]}},
]


def plain(value: Any) -> Any:
    """`value` with memoryviews as bytes, to compare with what cbor2 decodes."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


@pytest.mark.parametrize("value", VALUES)
def test_decodes_what_cbor2_encodes(value: Any) -> None:
    encoded = cbor2.dumps(value)
    assert plain(loads(encoded)) == cbor2.loads(encoded)


def test_half_and_single_floats_and_indefinite_lengths() -> None:
    half = b"\xf9\x3e\x00"  # 1.5 as a half float
    single = b"\xfa\x47\xc3\x50\x00"  # 100000.0 as a single float
    indefinite = (
        b"\xbf"  # map (indefinite)
        b"\x61a\x9f\x01\x02\xff"  # "a": [1, 2] (indefinite array)
        b"\x61b\x5f\x42\x01\x02\x41\x03\xff"  # "b": bytes in two chunks
        b"\x61c\x7f\x62ab\x61c\xff"  # "c": text in two chunks
        b"\xff"
    )
    for payload in (half, single, indefinite):
        assert plain(loads(payload)) == cbor2.loads(payload)


def test_dates_and_other_tags() -> None:
    when = datetime(2026, 12, 7, 13, 35, tzinfo=UTC)
    assert loads(cbor2.dumps(when)) == when
    assert loads(cbor2.dumps(when, datetime_as_timestamp=True)) == when
    assert loads(cbor2.dumps(cbor2.CBORTag(4000, [1, 2]))) == (4000, [1, 2])
    seen: list[tuple[int, Any]] = []
    assert (
        loads(cbor2.dumps(cbor2.CBORTag(99, "x")), tag_hook=lambda *tag: seen.append(tag)) is None
    )
    assert seen == [(99, "x")]


def test_byte_strings_are_views_of_the_message_not_copies() -> None:
    payload = bytearray(cbor2.dumps({"data": bytes(range(200)) * 1000}))
    data = loads(payload)["data"]
    assert isinstance(data, memoryview) and data.obj is payload
    assert np.shares_memory(np.frombuffer(data, np.uint8), np.frombuffer(payload, np.uint8))
    assert bytes(data) == bytes(range(200)) * 1000


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "past the end"),
        (b"\x5a\x00\x01\x00\x00abc", "past the end"),  # a 65536-byte string, 3 bytes
        (b"\x1c", "reserved"),
        (b"\x01\x02", "bytes after"),
        (b"\xff", "break code outside"),
        (b"\x82\x01\xff", "break code inside"),
        (b"\xa1\xff\x01", "break code inside"),
        (b"\x1f", "indefinite length"),
        (b"\xf8\x20", "simple value"),
        (b"\x5f\x61a\xff", "not a byte string"),
    ],
)
def test_malformed_items_are_errors(payload: bytes, message: str) -> None:
    with pytest.raises(CBORError, match=message):
        loads(payload)
