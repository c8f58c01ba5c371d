"""The collection-event schema: what a DAQ announces, and how it becomes a Prefect event.

One place for the event names, resource ids and labels that gateway, triggers in
`prefect.yaml` and flows agree on.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

EVENT_PREFIX = "beamline.collection"
COMPLETED_EVENT = "beamline.processing.completed"
FAILED_EVENT = "beamline.processing.failed"
RESOURCE_PREFIX = "beamline.collection"
LABEL_TECHNIQUE = "beamline.technique"
LABEL_EXPERIMENT_TYPE = "beamline.experiment_type"
LABEL_BEAMLINE = "beamline.name"
LABEL_VISIT = "beamline.visit"
TRACE_RESOURCE_PREFIX = "beamline.trace"
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

# LIMS ids and image numbers are SQL INTEGER columns (prefect_beamline.lims.schema), signed
# 32-bit in PostgreSQL and MariaDB: a larger value could never be looked up or recorded.
LIMS_INTEGER_MAX = 2**31 - 1
LimsId = Annotated[int, Field(ge=1, le=LIMS_INTEGER_MAX)]
"""A LIMS row id (dataCollectionId, ...): 1 to 2**31 - 1."""
ImageNumber = Annotated[int, Field(le=LIMS_INTEGER_MAX)]

# Prefect drops a repeated event id, so re-emitting from the outbox after a crash
# must produce the same id: derive it from the DAQ's own event id.
_EVENT_ID_NAMESPACE = uuid.UUID("5b7f3c1e-9a41-4d8e-8c1f-2f0b7d6a9e10")
_EVENT_ID_NAMESPACE_BYTES = _EVENT_ID_NAMESPACE.bytes


class CollectionEventKind(StrEnum):
    """Where in its life a data collection is."""

    started = "started"
    images_ready = "images_ready"
    finished = "finished"


def registered_technique(name: str) -> str:
    """`name` when a technique of that name is installed (see `prefect_beamline.techniques`)."""
    from prefect_beamline.techniques import technique_names

    names = technique_names()
    if name not in names:
        raise ValueError(f"unknown technique {name!r}; available: {', '.join(names)}")
    return name


# Which family of flows processes a collection: a registered technique's name.
TechniqueName = Annotated[str, AfterValidator(registered_technique)]


class GridScan(BaseModel):
    """Geometry of a 2-D grid scan (MX X-ray centring); images run row by row."""

    model_config = ConfigDict(extra="forbid")

    steps_x: int = Field(ge=1, description="Grid points along the fast (x) axis")
    steps_y: int = Field(ge=1, description="Grid points along the slow (y) axis")
    dx_um: float = Field(gt=0, description="Step size along x, micrometres")
    dy_um: float = Field(gt=0, description="Step size along y, micrometres")
    snaked: bool = Field(False, description="True when odd rows run backwards")


class CollectionEvent(BaseModel):
    """A DAQ's announcement of a data collection, in the project's own schema."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this announcement; a redelivery with the same id is "
        "accepted once",
    )
    kind: CollectionEventKind = Field(description="started, images_ready or finished")
    technique: TechniqueName = Field(
        description="Processing family: a registered technique (mx, tomo, em, ptycho, ...)"
    )
    experiment_type: str = Field(
        "default",
        min_length=1,
        max_length=40,
        description="Variant within the technique, e.g. 'rotation' or 'gridscan' for mx",
    )
    beamline: str = Field(min_length=1, max_length=45, description="Beamline name, e.g. i03")
    visit: str = Field(min_length=1, max_length=45, description="Visit, e.g. mx12345-1")
    collection_id: LimsId = Field(description="LIMS dataCollectionId (1 to 2**31 - 1)")
    data_files: list[str] = Field(
        min_length=1, description="Absolute paths of the data (for NXmx: the master file)"
    )
    image_range: tuple[ImageNumber, ImageNumber] | None = Field(
        None, description="First and last image number (1-based, inclusive); None for all"
    )
    grid: GridScan | None = Field(None, description="Grid geometry of a grid scan")
    processing_parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the flow's processing parameters, by name",
    )
    source: str = Field("daq", max_length=40, description="daq, zocalo or bluesky")
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    traceparent: str | None = Field(
        None,
        pattern=TRACEPARENT_PATTERN,
        description="W3C trace context (`00-<trace id>-<span id>-<flags>`) this collection's "
        "processing is traced in; set by the gateway from the `traceparent` header",
    )

    @field_validator("timestamp")
    @classmethod
    def _representable_in_utc(cls, value: datetime) -> datetime:
        """Prefect stores `occurred` in UTC and silently loses an event whose time has no
        UTC form (0001-01-01T00:00+05:00, 9999-12-31T23:59-05:00). No offset means UTC."""
        try:
            (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError(
                f"timestamp {value.isoformat()} lies outside the years 1 to 9999 in UTC"
            ) from None
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> CollectionEvent:
        if self.image_range is not None:
            first, last = self.image_range
            if first < 1 or last < first:
                raise ValueError(
                    f"image_range must be (first, last) with 1 <= first <= last, "
                    f"got {self.image_range}"
                )
        for path in self.data_files:
            if not path.startswith("/"):
                raise ValueError(f"data_files must be absolute paths, got {path!r}")
        return self

    @property
    def event_name(self) -> str:
        return f"{EVENT_PREFIX}.{self.kind.value}"

    @property
    def resource_id(self) -> str:
        return f"{RESOURCE_PREFIX}.{self.collection_id}"

    @property
    def prefect_event_id(self) -> uuid.UUID:
        return prefect_event_id(self.event_id)

    def resource(self) -> dict[str, str]:
        """The Prefect resource this event is about, with the labels triggers match on."""
        return {
            "prefect.resource.id": self.resource_id,
            "prefect.resource.name": f"{self.beamline} {self.visit} dc{self.collection_id}",
            LABEL_TECHNIQUE: self.technique,
            LABEL_EXPERIMENT_TYPE: self.experiment_type,
            LABEL_BEAMLINE: self.beamline,
            LABEL_VISIT: self.visit,
        }

    def trace_resources(self) -> list[dict[str, str]]:
        """The trace as a related resource, so Prefect's event feed finds it by trace id."""
        if self.traceparent is None:
            return []
        trace_id = self.traceparent.split("-")[1]
        return [
            {
                "prefect.resource.id": f"{TRACE_RESOURCE_PREFIX}.{trace_id}",
                "prefect.resource.role": "trace",
            }
        ]

    def to_prefect_event(self) -> dict[str, Any]:
        """The JSON body Prefect's `POST /api/events` takes for this announcement."""
        return {
            "id": prefect_event_id_text(self.event_id),
            "occurred": self.timestamp.isoformat(),
            "event": self.event_name,
            "resource": self.resource(),
            "related": self.trace_resources(),
            "payload": {"collection": self.model_dump(mode="json")},
        }


def prefect_event_id(daq_event_id: str) -> uuid.UUID:
    """Deterministic Prefect event id for a DAQ event id."""
    return uuid.uuid5(_EVENT_ID_NAMESPACE, daq_event_id)


def prefect_event_id_text(daq_event_id: str) -> str:
    """`str(prefect_event_id(daq_event_id))` at a third of the cost (no UUID object):
    the gateway writes it into every event and every receipt."""
    digest = bytearray(hashlib.sha1(_EVENT_ID_NAMESPACE_BYTES + daq_event_id.encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = digest[:16].hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def encode_prefect_event(event: CollectionEvent) -> bytes:
    """The event's Prefect event as the gateway sends it: compact UTF-8 JSON (raises
    ValueError for a non-finite number, UnicodeEncodeError for a lone surrogate)."""
    return json.dumps(
        event.to_prefect_event(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")
