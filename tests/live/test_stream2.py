"""DECTRIS Stream V2: messages as the specification encodes them, over a real ZeroMQ
PUSH/PULL pair, decoded in memory with frames still compressed until analysed."""

from __future__ import annotations

import threading

import cbor2
import numpy as np
import pytest

from prefect_beamline.formats.raw_chunks import encode_bslz4
from prefect_beamline.live.stream2 import (
    DECTRIS_COMPRESSION,
    MULTI_DIMENSIONAL_ARRAY,
    SeriesHeader,
    Stream2Consumer,
    Stream2Simulator,
    StreamError,
    StreamImage,
    decode_message,
    encode_message,
    image_message,
)
from prefect_beamline.stack import free_port


def header(shape: tuple[int, int] = (64, 80), n_images: int = 3) -> SeriesHeader:
    mask = np.zeros(shape, dtype=np.uint32)
    mask[:, 40] = 1
    return SeriesHeader(
        series_id=4,
        series_unique_id="01HX-series",
        number_of_images=n_images,
        image_shape=shape,
        beam_center_x=40.2,
        beam_center_y=31.7,
        pixel_size_x_m=75e-6,
        pixel_size_y_m=75e-6,
        incident_wavelength_angstrom=0.9763,
        saturation_value=1_000_000,
        pixel_mask=mask,
    )


def frames(n: int, shape: tuple[int, int] = (64, 80)) -> list[tuple[np.ndarray, bytes]]:
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        frame = rng.poisson(0.5, shape).astype(np.uint32)
        out.append((frame, encode_bslz4(frame)))
    return out


def test_image_data_is_a_tag_40_array_of_a_compressed_little_endian_uint32_array() -> None:
    ((frame, chunk),) = frames(1)
    encoded = encode_message(image_message(header(), 0, frame, chunk, 0.0))
    assert encoded[:3] == b"\xd9\xd9\xf7"  # self-described CBOR (tag 55799)
    message = cbor2.loads(encoded)  # no hooks: the tags as sent
    assert next(iter(message)) == "type"
    array = message["data"]["threshold_1"]
    assert array.tag == MULTI_DIMENSIONAL_ARRAY
    dims, typed = array.value
    assert list(dims) == [64, 80] and typed.tag == 70  # uint32, little endian (RFC 8746)
    assert typed.value.tag == DECTRIS_COMPRESSION
    assert list(typed.value.value[:2]) == ["bslz4", 4]
    assert list(message["real_time"]) == [20_000, 10_000_000]


def test_decoded_image_keeps_its_frame_compressed_until_decoded() -> None:
    ((frame, chunk),) = frames(1)
    message = decode_message(encode_message(image_message(header(), 2, frame, chunk, 0.004)))
    raw = message["data"]["threshold_1"].raw_frame(3, "test")
    assert raw.compressed and raw.chunk == chunk
    np.testing.assert_array_equal(raw.decode(), frame)


def test_start_message_round_trips_geometry_and_mask() -> None:
    from prefect_beamline.live.stream2 import start_message

    sent = header()
    received = SeriesHeader.from_message(decode_message(encode_message(start_message(sent))))
    assert received == sent
    np.testing.assert_array_equal(received.pixel_mask, sent.pixel_mask)


def test_malformed_messages_are_stream_errors() -> None:
    with pytest.raises(StreamError, match="not a Stream V2"):
        decode_message(b"\xff\x00garbage")
    with pytest.raises(StreamError, match="type start, image or end"):
        decode_message(cbor2.dumps({"type": "other"}))
    with pytest.raises(StreamError, match="lacks the field 'series_id'"):
        SeriesHeader.from_message({"type": "start"})


def test_a_series_crosses_zeromq_from_simulator_to_consumer() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    simulator = Stream2Simulator(endpoint)
    consumer = Stream2Consumer(endpoint, receive_timeout_s=20)
    sent = frames(3)
    try:
        thread = threading.Thread(target=simulator.send_series, args=(header(), sent))
        thread.start()
        items = list(consumer.series())
        thread.join()
    finally:
        consumer.close()
        simulator.close()
    assert isinstance(items[0], SeriesHeader) and items[0].number_of_images == 3
    images = [item for item in items[1:] if isinstance(item, StreamImage)]
    assert [image.image_number for image in images] == [1, 2, 3]
    for image, (frame, _) in zip(images, sent, strict=True):
        np.testing.assert_array_equal(image.raw.decode(), frame)
