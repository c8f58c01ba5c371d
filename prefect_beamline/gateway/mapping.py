"""Zocalo trigger messages and Bluesky documents, mapped onto the collection-event schema.

A Zocalo message (as dodal's ZocaloTrigger sends it) names only the data collection id;
the rest comes from the LIMS, as Zocalo's own services read it from ISPyB. A Bluesky
start document carries the collection's metadata; its stop document only names the
start, so the gateway keeps start documents to map stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.lims import CollectionDescription

CollectionLookup = Callable[[int], CollectionDescription | None]


class MappingError(ValueError):
    """The message is well-formed but cannot be mapped (unknown id, unknown start)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


class ZocaloParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    ispyb_dcid: int = Field(ge=1, description="ISPyB dataCollectionId")
    event: Literal["start", "end"] = Field(description="start or end of the collection")
    guid: str | None = Field(None, max_length=200, description="Unique id of this message")
    start_index: int | None = Field(None, ge=0, description="First frame, 0-based")
    number_of_frames: int | None = Field(None, ge=1, description="Frames in this message")


class ZocaloTrigger(BaseModel):
    """`{"recipes": [...], "parameters": {"ispyb_dcid": ..., "event": ...}}`."""

    model_config = ConfigDict(extra="allow")

    recipes: list[str] = Field(default_factory=list, description="Zocalo recipes (informative)")
    parameters: ZocaloParameters


class BlueskyDocument(BaseModel):
    """`{"name": "start" | "stop", "doc": {...}}` as a RunEngine callback posts it."""

    name: Literal["start", "stop"]
    doc: dict[str, Any]


# Keys a Bluesky start document must carry (in its metadata) to be processed.
BLUESKY_START_KEYS = ("uid", "technique", "beamline", "visit", "data_collection_id", "data_files")


def zocalo_to_event(message: ZocaloTrigger, lookup: CollectionLookup) -> CollectionEvent:
    """The collection event for a Zocalo trigger, completed from the LIMS."""
    parameters = message.parameters
    collection = lookup(parameters.ispyb_dcid)
    if collection is None:
        raise MappingError(
            f"parameters.ispyb_dcid: data collection {parameters.ispyb_dcid} is not in the LIMS",
            status_code=404,
        )
    kind = (
        CollectionEventKind.started if parameters.event == "start" else CollectionEventKind.finished
    )
    image_range = collection.image_range
    if parameters.start_index is not None and parameters.number_of_frames is not None:
        first = parameters.start_index + 1
        image_range = (first, first + parameters.number_of_frames - 1)
    return CollectionEvent(
        event_id=parameters.guid or f"zocalo-{parameters.ispyb_dcid}-{parameters.event}",
        kind=kind,
        technique=collection.technique,
        experiment_type=collection.experiment_type,
        beamline=collection.beamline,
        visit=collection.visit,
        collection_id=collection.collection_id,
        data_files=collection.data_files,
        image_range=image_range,
        grid=collection.grid,
        source="zocalo",
    )


def bluesky_start_to_event(document: dict[str, Any]) -> CollectionEvent:
    """A `started` event from a start document's metadata."""
    missing = [key for key in BLUESKY_START_KEYS if key not in document]
    if missing:
        raise MappingError(f"doc.{missing[0]}: the start document lacks {', '.join(missing)}")
    return _event_from_start(document, CollectionEventKind.started, str(document["uid"]))


def bluesky_stop_to_event(stop: dict[str, Any], start: dict[str, Any] | None) -> CollectionEvent:
    """A `finished` event for a stop document, from its stored start document."""
    if "uid" not in stop or "run_start" not in stop:
        raise MappingError("doc.run_start: a stop document needs uid and run_start")
    if start is None:
        raise MappingError(
            f"doc.run_start: no start document {stop['run_start']!r} was received", 409
        )
    return _event_from_start(start, CollectionEventKind.finished, str(stop["uid"]))


def _event_from_start(
    start: dict[str, Any], kind: CollectionEventKind, event_id: str
) -> CollectionEvent:
    files = start["data_files"]
    grid = start.get("grid")
    return CollectionEvent(
        event_id=event_id,
        kind=kind,
        technique=start["technique"],
        experiment_type=start.get("experiment_type", "default"),
        beamline=start["beamline"],
        visit=start["visit"],
        collection_id=start["data_collection_id"],
        data_files=[files] if isinstance(files, str) else files,
        image_range=start.get("image_range"),
        grid=GridScan.model_validate(grid) if grid else None,
        processing_parameters=start.get("processing", {}),
        source="bluesky",
    )
