"""The three ways frames become live work, each feeding a session (MX's `LiveSession`,
serial crystallography's `SerialLiveSession`: anything with `submit` and the image range).

- `follow_swmr`: a collection's NXmx files being written with SWMR (new images by count);
- `follow_stream`: a DECTRIS Stream V2 series (frames from memory, no file);
- `follow_images_ready`: the DAQ's `images_ready` announcements (image ranges), as
  Prefect events from the gateway, read from files written with SWMR.

Each reads frames raw on the calling thread and leaves decompression and spot finding
to the session's workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from prefect_beamline.events import EVENT_PREFIX, RESOURCE_PREFIX, CollectionEventKind
from prefect_beamline.formats.nxmx import (
    DATA_GROUP,
    DetectorGeometry,
    NXmxCollection,
    NXmxError,
    _DataBlock,
)
from prefect_beamline.formats.raw_chunks import RawFrame, RawFrameReader
from prefect_beamline.live.stream2 import SeriesHeader, Stream2Consumer, StreamError, StreamImage
from prefect_beamline.live.swmr import SwmrWatcher


class FrameSession(Protocol):
    """What an input feeds: frames of images first_image..first_image + n_images − 1."""

    first_image: int
    n_images: int

    def submit(self, raw: RawFrame, available_at: float | None = None) -> None: ...


Session = TypeVar("Session", bound=FrameSession)
SessionFactory = Callable[[DetectorGeometry, np.ndarray, int], Session]
"""Builds a session from the collection's geometry, valid-pixel mask and image count."""


class _SwmrCollection(NXmxCollection):
    """An NXmx collection whose data files are being written with SWMR: the master's
    geometry and mask as NXmxCollection reads them, the frames' shape from the first
    data file opened for SWMR reading (a plain open fails while a SWMR writer has it)."""

    def _open_data_blocks(self) -> list[_DataBlock]:
        self._raw = RawFrameReader(self.master_file, swmr=True)
        block = self._raw.first_block
        return [_DataBlock(DATA_GROUP, block.path, 1, block.count, block.dataset)]

    def close(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()
        super().close()


def collection_setup(
    master_file: Path, *, timeout_s: float = 60.0
) -> tuple[DetectorGeometry, np.ndarray, int]:
    """Geometry, mask and planned image count of a collection being written: waits for
    the master and the first data file (created with the first image)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with _SwmrCollection(master_file) as collection:
                geometry, valid = collection.geometry, np.array(collection.valid_pixels)
            return geometry, valid, _planned_images(master_file)
        except NXmxError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _planned_images(master_file: Path) -> int:
    """Images the collection will hold (the master's nimages, else the data files')."""
    with RawFrameReader(master_file, swmr=True) as reader:
        return reader.planned_images()


def follow_swmr(master_file: Path, session: FrameSession, *, stall_timeout_s: float = 60.0) -> None:
    """Submit each image of `master_file` as soon as its data file's count shows it."""
    with SwmrWatcher(master_file) as watcher:
        for raw in watcher.frames(
            session.first_image + session.n_images - 1, stall_timeout_s=stall_timeout_s
        ):
            session.submit(raw, time.time())


def geometry_from_header(header: SeriesHeader, detector_distance_mm: float) -> DetectorGeometry:
    """The start message's geometry (the distance comes from the collection's metadata:
    Stream V2's start message does not carry it)."""
    return DetectorGeometry(
        wavelength_angstrom=header.incident_wavelength_angstrom,
        detector_distance_mm=detector_distance_mm,
        beam_centre_x_px=header.beam_center_x,
        beam_centre_y_px=header.beam_center_y,
        pixel_size_x_mm=header.pixel_size_x_m * 1000.0,
        pixel_size_y_mm=header.pixel_size_y_m * 1000.0,
        saturation_value=header.saturation_value,
        image_shape=header.image_shape,
    )


def follow_stream(
    consumer: Stream2Consumer,
    make_session: SessionFactory[Session],
    detector_distance_mm: float,
) -> Session:
    """One Stream V2 series: its start message sets the session up, each image message
    is submitted as it arrives; returns the session (not yet finished) after `end`."""
    session: Session | None = None
    for item in consumer.series():
        if isinstance(item, SeriesHeader):
            if item.pixel_mask is None:
                raise StreamError(
                    f"{consumer.endpoint}: start message without pixel_mask: set the "
                    "stream's header_detail to 'all'"
                )
            geometry = geometry_from_header(item, detector_distance_mm)
            session = make_session(geometry, item.pixel_mask == 0, item.number_of_images)
        elif isinstance(item, StreamImage):
            assert session is not None
            session.submit(item.raw, item.received_at)
    if session is None:
        raise StreamError(f"{consumer.endpoint}: series ended before it started")
    return session


async def follow_images_ready(
    master_file: Path,
    collection_id: int,
    session: FrameSession,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
) -> None:
    """Submit the image ranges of the collection's `images_ready` events as they come.

    Subscribes to the Prefect server's event stream (the gateway emitted the DAQ's
    announcements there); each range is read raw from the SWMR files. An event emitted
    while the subscription starts may reach neither the live stream nor the backfill
    (the server persists events in batches), so the stored events are also read every
    `poll_s` while images are missing: a range is submitted once, whichever way it came.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=[f"{EVENT_PREFIX}.{CollectionEventKind.images_ready.value}"]),
        resource=EventResourceFilter(id=[f"{RESOURCE_PREFIX}.{collection_id}"]),
    )
    submitted: set[int] = set()
    last = session.first_image + session.n_images - 1
    reader: RawFrameReader | None = None
    deadline = time.monotonic() + timeout_s

    async def submit(payload: dict[str, Any]) -> None:
        nonlocal reader
        announced = (payload.get("collection") or {}).get("image_range")
        if not announced:
            return
        first, stop = int(announced[0]), int(announced[1])
        if reader is None:
            reader = RawFrameReader(master_file, swmr=True)
        reader.refresh()
        for number in range(max(first, session.first_image), min(stop, last) + 1):
            if number not in submitted:
                await asyncio.to_thread(session.submit, reader.read(number), time.time())
                submitted.add(number)

    try:
        async with get_events_subscriber(filter=event_filter) as subscriber, get_client() as client:
            while len(submitted) < session.n_images:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{master_file}: {len(submitted)} of {session.n_images} images "
                        f"announced by images_ready within {timeout_s} s"
                    )
                try:
                    async with asyncio.timeout(poll_s):  # not wait_for: see Drainer.run
                        event = await subscriber.__anext__()
                    await submit(event.payload)
                except TimeoutError:
                    stored = await client.request(
                        "POST",
                        "/events/filter",
                        json={"filter": event_filter.model_dump(mode="json"), "limit": 50},
                    )
                    for found in stored.json().get("events", []):
                        await submit(found.get("payload") or {})
    finally:
        if reader is not None:
            reader.close()
