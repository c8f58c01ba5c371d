"""DECTRIS Stream V2: the messages, a detector simulator and a consumer.

Stream V2 (DECTRIS's public specification, SIMPLON 2022.1+) sends one CBOR map per
ZeroMQ message on a PUSH socket (port 31001 on a detector): `start` at arm, one `image`
per exposure, `end` at disarm. Arrays are RFC 8746 multi-dimensional arrays (tag 40,
row major) of typed arrays (tags 64-87); a typed array's bytes may be compressed, as
DECTRIS's tag 56500 `["bslz4", element size, bytes]` in the framing of the HDF5
bitshuffle filter. Images carry `image_id`, `series_id`, `series_unique_id` and
`start_time`/`stop_time`/`real_time` as rationals.

The consumer decodes the CBOR only, and without copying: an image's compressed bytes
travel on as a `RawFrame` holding a view of the received ZeroMQ message (`cbor.loads`),
and the analysis threads decompress them with the GIL released.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
import numpy as np

from prefect_beamline.formats.raw_chunks import RawFrame
from prefect_beamline.live.cbor import CBORError, default_tags, loads

DETECTOR_PORT = 31001
SELF_DESCRIBED_CBOR = 55799
MULTI_DIMENSIONAL_ARRAY = 40  # row major (RFC 8746 section 3.1.1)
DECTRIS_COMPRESSION = 56500
CHANNEL = "threshold_1"
TIME_BASE_HZ = 10_000_000  # the denominator of our rationals (100 ns ticks)

# RFC 8746 typed-array tags: 0b010_f_s_e_ll (float, signed, little endian, size).
TYPED_ARRAY_TAGS: dict[int, np.dtype] = {
    64: np.dtype("u1"),
    65: np.dtype(">u2"),
    66: np.dtype(">u4"),
    67: np.dtype(">u8"),
    69: np.dtype("<u2"),
    70: np.dtype("<u4"),
    71: np.dtype("<u8"),
    72: np.dtype("i1"),
    73: np.dtype(">i2"),
    74: np.dtype(">i4"),
    75: np.dtype(">i8"),
    77: np.dtype("<i2"),
    78: np.dtype("<i4"),
    79: np.dtype("<i8"),
    81: np.dtype(">f4"),
    82: np.dtype(">f8"),
    85: np.dtype("<f4"),
    86: np.dtype("<f8"),
}
_TAG_OF_DTYPE = {dtype: tag for tag, dtype in TYPED_ARRAY_TAGS.items()}


class StreamError(ValueError):
    """A Stream V2 message that does not follow the specification."""


@dataclass(frozen=True)
class Compressed:
    """Tag 56500's content: bytes still compressed with `algorithm`."""

    algorithm: str
    elem_size: int
    data: bytes | memoryview


@dataclass(frozen=True)
class StreamArray:
    """A multi-dimensional typed array as received (bytes maybe still compressed)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data: bytes | memoryview | Compressed

    def to_numpy(self) -> np.ndarray:
        """Decoded array (native byte order); decompresses on the caller's thread."""
        if isinstance(self.data, Compressed):
            frame = self.raw_frame(0, "array").decode()
        else:
            frame = np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape)
        return frame.astype(self.dtype.newbyteorder("="), copy=False)

    def raw_frame(self, image_number: int, where: str) -> RawFrame:
        """As a `RawFrame` the analysis decodes off the GIL (2-D arrays only)."""
        if len(self.shape) != 2:
            raise StreamError(f"{where}: image of shape {self.shape}, expected (ny, nx)")
        compressed = isinstance(self.data, Compressed)
        if compressed:
            assert isinstance(self.data, Compressed)
            if self.data.algorithm != "bslz4":
                raise StreamError(
                    f"{where}: compression {self.data.algorithm!r}, expected 'bslz4' or none"
                )
            if self.data.elem_size != self.dtype.itemsize:
                raise StreamError(
                    f"{where}: bslz4 element size {self.data.elem_size}, expected "
                    f"{self.dtype.itemsize} for {self.dtype}"
                )
        if self.dtype.byteorder == ">":
            raise StreamError(f"{where}: big-endian images are not supported")
        payload = self.data.data if isinstance(self.data, Compressed) else self.data
        return RawFrame(
            image_number=image_number,
            chunk=payload,
            compressed=compressed,
            shape=(int(self.shape[0]), int(self.shape[1])),
            dtype=self.dtype.newbyteorder("="),
            where=where,
        )


def _tag_hook(tag: int, value: Any) -> Any:
    """Tags 56500, typed arrays and tag 40 as the objects above; others as `cbor`
    decodes them (dates as datetimes, the rest as (tag, value))."""
    if tag == DECTRIS_COMPRESSION:
        try:
            algorithm, elem_size, data = value
        except (TypeError, ValueError):
            raise StreamError("tag 56500 must hold [algorithm, element size, bytes]") from None
        if not isinstance(data, memoryview):
            raise StreamError("tag 56500 must hold [algorithm, element size, bytes]")
        return Compressed(str(algorithm), int(elem_size), data)
    if tag in TYPED_ARRAY_TAGS:
        if not isinstance(value, memoryview | Compressed):
            raise StreamError(f"typed array tag {tag} must hold a byte string")
        return (TYPED_ARRAY_TAGS[tag], value)
    if tag == MULTI_DIMENSIONAL_ARRAY:
        try:
            dims, (dtype, data) = value
        except (TypeError, ValueError):
            raise StreamError("tag 40 must hold [dimensions, typed array]") from None
        return StreamArray(tuple(int(size) for size in dims), dtype, data)
    if tag == SELF_DESCRIBED_CBOR:
        return value
    return default_tags(tag, value)


def encode_array(array: np.ndarray, compressed: bytes | None = None) -> cbor2.CBORTag:
    """`array` as tag 40 of a typed array; `compressed` its bslz4 chunk if given."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    data: Any = (
        cbor2.CBORTag(DECTRIS_COMPRESSION, ["bslz4", dtype.itemsize, compressed])
        if compressed is not None
        else np.ascontiguousarray(array, dtype=dtype).tobytes()
    )
    return cbor2.CBORTag(
        MULTI_DIMENSIONAL_ARRAY, [list(array.shape), cbor2.CBORTag(_TAG_OF_DTYPE[dtype], data)]
    )


def _rational(seconds: float) -> list[int]:
    return [round(seconds * TIME_BASE_HZ), TIME_BASE_HZ]


def encode_message(message: dict[str, Any]) -> bytes:
    """One Stream V2 message: a self-described CBOR map whose first key is `type`."""
    return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBED_CBOR, message))


def decode_message(payload: bytes | memoryview) -> dict[str, Any]:
    """A Stream V2 message as a dict (arrays as `StreamArray`, their bytes views of
    `payload`); StreamError if malformed."""
    try:
        message = loads(payload, tag_hook=_tag_hook)
    except StreamError:
        raise
    except (CBORError, ValueError, RecursionError) as error:
        raise StreamError(f"not a Stream V2 CBOR message ({error})") from error
    if not isinstance(message, Mapping) or message.get("type") not in ("start", "image", "end"):
        raise StreamError("message is not a map with type start, image or end")
    return dict(message)


@dataclass(frozen=True)
class SeriesHeader:
    """What the start message tells the analysis: geometry, mask, size of the series."""

    series_id: int
    series_unique_id: str
    number_of_images: int
    image_shape: tuple[int, int]
    beam_center_x: float
    beam_center_y: float
    pixel_size_x_m: float
    pixel_size_y_m: float
    incident_wavelength_angstrom: float
    saturation_value: int
    pixel_mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    user_data: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> SeriesHeader:
        try:
            masks = message.get("pixel_mask") or {}
            mask = masks.get(CHANNEL) if isinstance(masks, Mapping) else None
            user = message.get("user_data")
            return cls(
                series_id=int(message["series_id"]),
                series_unique_id=str(message["series_unique_id"]),
                number_of_images=int(message["number_of_images"]),
                image_shape=(int(message["image_size_y"]), int(message["image_size_x"])),
                beam_center_x=float(message["beam_center_x"]),
                beam_center_y=float(message["beam_center_y"]),
                pixel_size_x_m=float(message["pixel_size_x"]),
                pixel_size_y_m=float(message["pixel_size_y"]),
                incident_wavelength_angstrom=float(message["incident_wavelength"]),
                saturation_value=int(message["saturation_value"]),
                pixel_mask=mask.to_numpy() if isinstance(mask, StreamArray) else None,
                user_data=dict(user) if isinstance(user, Mapping) else {},
            )
        except KeyError as error:
            raise StreamError(f"start message lacks the field {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise StreamError(f"start message has a field of the wrong type ({error})") from None


def start_message(header: SeriesHeader, *, frame_time_s: float = 0.002) -> dict[str, Any]:
    """The start message of a series, with the pixel mask (header_detail "all")."""
    message: dict[str, Any] = {
        "type": "start",
        "arm_date": datetime.now(UTC),
        "series_id": header.series_id,
        "series_unique_id": header.series_unique_id,
        "number_of_images": header.number_of_images,
        "image_size_x": header.image_shape[1],
        "image_size_y": header.image_shape[0],
        "beam_center_x": header.beam_center_x,
        "beam_center_y": header.beam_center_y,
        "pixel_size_x": header.pixel_size_x_m,
        "pixel_size_y": header.pixel_size_y_m,
        "incident_wavelength": header.incident_wavelength_angstrom,
        "incident_energy": 12398.419843 / header.incident_wavelength_angstrom,
        "saturation_value": header.saturation_value,
        "channels": [CHANNEL],
        "count_time": frame_time_s,
        "frame_time": frame_time_s,
        "pixel_mask_enabled": header.pixel_mask is not None,
        "user_data": header.user_data,
    }
    if header.pixel_mask is not None:
        message["pixel_mask"] = {CHANNEL: encode_array(header.pixel_mask.astype(np.uint32))}
    return message


def image_message(
    header: SeriesHeader, image_id: int, frame: np.ndarray, chunk: bytes, start_s: float
) -> dict[str, Any]:
    """The image message of exposure `image_id` (0-based), its data bslz4 `chunk`."""
    return {
        "type": "image",
        "series_id": header.series_id,
        "series_unique_id": header.series_unique_id,
        "image_id": image_id,
        "real_time": _rational(0.002),
        "start_time": _rational(start_s),
        "stop_time": _rational(start_s + 0.002),
        "data": {CHANNEL: encode_array(frame, compressed=chunk)},
    }


def end_message(header: SeriesHeader) -> dict[str, Any]:
    return {
        "type": "end",
        "series_id": header.series_id,
        "series_unique_id": header.series_unique_id,
    }


class Stream2Simulator:
    """A detector's Stream V2 output: binds a ZeroMQ PUSH socket and sends a series.

    `send_series` paces images at `rate_hz` (0: as fast as the socket takes them) and
    blocks while no consumer is connected, as a detector's PUSH socket does (up to
    `send_timeout_s` per message, then TimeoutError).
    """

    def __init__(self, endpoint: str, *, send_timeout_s: float = 60.0) -> None:
        import zmq

        self.endpoint = endpoint
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 5000)
        self._socket.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
        self._socket.bind(endpoint)

    def close(self) -> None:
        self._socket.close()
        self._context.term()

    def send(self, message: dict[str, Any]) -> None:
        """Send one message; TimeoutError when no consumer takes it in time."""
        import zmq

        try:
            self._socket.send(encode_message(message), copy=False)
        except zmq.Again:
            raise TimeoutError(f"{self.endpoint}: no Stream V2 consumer took a message") from None

    def send_series(
        self,
        header: SeriesHeader,
        frames: Iterable[tuple[np.ndarray, bytes]],
        *,
        rate_hz: float = 0.0,
        sent_at: list[float] | None = None,
    ) -> None:
        """start, one image per (frame, bslz4 chunk), end; `sent_at` gets each image's
        send time (time.time()), for latency measurements."""
        self.send(start_message(header))
        began = time.perf_counter()
        for image_id, (frame, chunk) in enumerate(frames):
            if rate_hz > 0:
                delay = began + image_id / rate_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if sent_at is not None:
                sent_at.append(time.time())
            self.send(image_message(header, image_id, frame, chunk, image_id * 0.002))
        self.send(end_message(header))


@dataclass(frozen=True)
class StreamImage:
    """One received image: its frame still compressed, and when it arrived."""

    series_unique_id: str
    image_number: int  # 1-based (image_id + 1), as NXmx and the LIMS count
    raw: RawFrame
    received_at: float


class Stream2Consumer:
    """Connects a PULL socket to a detector (or simulator) and yields its messages.

    `series()` yields the header, then `StreamImage`s until the end message; frames stay
    compressed (the analysis decodes them). A message for another series is an error.
    """

    def __init__(self, endpoint: str, *, receive_timeout_s: float = 30.0) -> None:
        import zmq

        self.endpoint = endpoint
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVTIMEO, int(receive_timeout_s * 1000))
        self._socket.setsockopt(zmq.RCVHWM, 64)
        self._socket.connect(endpoint)

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    def receive(self) -> dict[str, Any]:
        import zmq

        try:
            # The message's own buffer: its frame is decoded in place, never copied.
            payload = self._socket.recv(copy=False).buffer
        except zmq.Again:
            raise TimeoutError(f"{self.endpoint}: no Stream V2 message in time") from None
        return decode_message(payload)

    def series(self) -> Iterator[SeriesHeader | StreamImage]:
        """The next series: its header, then each image, until `end`."""
        message = self.receive()
        while message["type"] != "start":  # a consumer may join mid-series: skip to start
            message = self.receive()
        header = SeriesHeader.from_message(message)
        yield header
        while True:
            message = self.receive()
            if message.get("series_unique_id") != header.series_unique_id:
                raise StreamError(
                    f"{self.endpoint}: message of series {message.get('series_unique_id')!r} "
                    f"inside series {header.series_unique_id!r}"
                )
            if message["type"] == "end":
                return
            if message["type"] != "image":
                raise StreamError(f"{self.endpoint}: {message['type']} message inside a series")
            image_number = int(message["image_id"]) + 1
            where = f"{self.endpoint} series {header.series_unique_id} image {image_number}"
            data = message.get("data")
            if not isinstance(data, Mapping) or not isinstance(data.get(CHANNEL), StreamArray):
                raise StreamError(f"{where}: no {CHANNEL} array in data")
            yield StreamImage(
                header.series_unique_id,
                image_number,
                data[CHANNEL].raw_frame(image_number, where),
                time.time(),
            )
