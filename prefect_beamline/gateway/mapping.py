"""Zocalo trigger messages and Bluesky documents, mapped onto the collection-event schema.

Zocalo (as dodal's `ZocaloTrigger` sends it) names only the data collection id; the rest
comes from the LIMS, as Zocalo's own services read it from ISPyB. `start` becomes a
`started` event, `end` a `finished` one. The `recipes` (dodal always sends `["mimas"]`) and
the other parameters are kept in the outbox with the raw message but are not passed on:
`processing_parameters` are overrides the flows validate strictly, and which flow runs is
decided by the triggers in `prefect.yaml`, our Mimas.

Bluesky: a start document carries the collection's metadata (`BlueskyStart` lists the
keys); its stop document names only the start's uid, so the gateway keeps start documents
to map stops. A stop whose `exit_status` is not `success` is recorded but not emitted (see
`RUN_NOT_COMPLETED`): its flows would run on an incomplete collection, and the exit status
has no place among the flows' parameters. An operator can still requeue it by event id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from prefect_beamline.events import (
    CollectionEvent,
    CollectionEventKind,
    GridScan,
    ImageNumber,
    LimsId,
    TechniqueName,
)
from prefect_beamline.lims import CollectionDescription
from prefect_beamline.lims.schema import ISPYB_EXPERIMENT_TYPES, technique_for_experiment_type

CollectionLookup = Callable[[int], CollectionDescription | None]
"""Resolves a data collection id, e.g. `Lims(url).get_collection`; None when unknown."""

# A document's `time`: seconds since 1970, up to the end of year 9999 (the last second a
# timestamp can name; Python's datetime and Prefect's `occurred` stop there).
EpochSeconds = Annotated[float, Field(ge=0, le=253_402_300_799)]

# Every document name of event-model. Only start and stop are used; the others are
# accepted and ignored, so a callback that forwards every document sees no errors.
BlueskyDocumentName = Literal[
    "start",
    "stop",
    "descriptor",
    "event",
    "event_page",
    "resource",
    "datum",
    "datum_page",
    "stream_resource",
    "stream_datum",
]
BLUESKY_IGNORED_DOCUMENTS = frozenset(get_args(BlueskyDocumentName)) - {"start", "stop"}
# The collection id of a start document without one while it is checked at the door,
# before the gateway creates its DataCollection (`BlueskyStart.with_collection`).
PROVISIONAL_COLLECTION_ID = 1
RUN_NOT_COMPLETED = "run ended with exit_status {exit_status!r}: recorded, not emitted"


class MappingError(ValueError):
    """A well-formed message that cannot be mapped; `status_code` is the HTTP answer."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


def describe_errors(
    error: ValidationError, prefix: str = "", names: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Pydantic errors as `{"field", "message", "type"}`, fields renamed to the sender's."""
    names = names or {}
    described = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        if parts:
            parts[0] = names.get(parts[0], parts[0])
        described.append(
            {
                "field": prefix + ".".join(parts) if parts else prefix.rstrip(".") or "(body)",
                "message": item["msg"],
                "type": item["type"],
            }
        )
    return described


def summarize_errors(errors: list[dict[str, Any]]) -> str:
    """One line naming every field: `collection_id: Field required; kind: ...`."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors)


class ZocaloParameters(BaseModel):
    """`parameters` of a trigger message; other keys (filename, ...) are kept, not used."""

    model_config = ConfigDict(extra="allow")

    ispyb_dcid: LimsId = Field(description="ISPyB dataCollectionId (1 to 2**31 - 1)")
    event: Literal["start", "end"] = Field(description="start or end of the collection")
    guid: str | None = Field(
        None, min_length=1, max_length=200, description="Unique message id; the event id"
    )
    start_frame_index: int | None = Field(
        None, ge=0, description="First frame of this trigger in the detector's file, 0-based"
    )
    number_of_frames: int | None = Field(None, ge=1, description="Frames of this trigger")
    message_index: int | None = Field(
        None, ge=0, description="Which trigger of one detector arm this is (0, 1, ...)"
    )


class ZocaloTrigger(BaseModel):
    """`{"recipes": [...], "parameters": {"ispyb_dcid": ..., "event": "start"|"end"}}`."""

    model_config = ConfigDict(extra="allow")

    recipes: list[str] = Field(
        default_factory=list, description="Zocalo recipes; recorded, not used (see module doc)"
    )
    parameters: ZocaloParameters


def zocalo_event_id(parameters: ZocaloParameters) -> str:
    """The guid when sent, else one id per (collection, event, trigger index).

    dodal sends one `start` per trigger of a detector arm (`message_index`) and one `end`.
    """
    if parameters.guid:
        return parameters.guid
    event_id = f"zocalo-{parameters.ispyb_dcid}-{parameters.event}"
    if parameters.event == "start" and parameters.message_index is not None:
        event_id += f"-{parameters.message_index}"
    return event_id


def zocalo_to_event(message: ZocaloTrigger, lookup: CollectionLookup) -> CollectionEvent:
    """The collection event for a trigger message, completed from the LIMS.

    Raises MappingError: 404 for an unknown collection, 422 for a LIMS row that does not
    describe a processable collection. Other lookup errors (LIMS down) propagate.
    """
    parameters = message.parameters
    dcid = parameters.ispyb_dcid
    try:
        collection = lookup(dcid)
    except ValueError as error:
        raise MappingError(f"parameters.ispyb_dcid: data collection {dcid}: {error}") from None
    if collection is None:
        raise MappingError(
            f"parameters.ispyb_dcid: data collection {dcid} is not in the LIMS", status_code=404
        )
    image_range = collection.image_range
    if (
        parameters.event == "start"
        and parameters.start_frame_index is not None
        and parameters.number_of_frames is not None
    ):
        first = parameters.start_frame_index + 1
        image_range = (first, first + parameters.number_of_frames - 1)
    try:
        return CollectionEvent(
            event_id=zocalo_event_id(parameters),
            kind=CollectionEventKind.started
            if parameters.event == "start"
            else CollectionEventKind.finished,
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
    except ValidationError as error:
        raise MappingError(
            f"parameters.ispyb_dcid: the LIMS row of data collection {dcid} does not make a "
            f"valid collection event: {summarize_errors(describe_errors(error))}"
        ) from None


class BlueskyDocument(BaseModel):
    """`{"name": ..., "doc": {...}}`, as a RunEngine callback posts each document."""

    name: BlueskyDocumentName = Field(
        description="Document name; only start and stop are used, the others are ignored"
    )
    doc: dict[str, Any] = Field(description="The document (event-model schema)")


class BlueskyStart(BaseModel):
    """The keys of a start document the gateway reads (RE.md or plan metadata).

    Without `data_collection_id` (a DAQ whose ISPyB row is made during the run, as
    Hyperion's ISPyB callback does) the gateway creates the DataCollection in the LIMS.
    `data_file` and `num_images` are read as `data_files` and `image_range` (1, n); an
    ISPyB experimentType ("SAD", "Mesh3D", ...) as `experiment_type` names the technique
    too. Other keys (scan_id, plan_name, ...) are allowed and ignored.
    """

    model_config = ConfigDict(extra="allow")

    uid: str = Field(min_length=1, max_length=200, description="Run uid; the event id")
    time: EpochSeconds | None = Field(None, description="Start time, seconds since the epoch")
    technique: TechniqueName = Field(
        description="a registered technique: mx, tomo, em, ptycho, ...; may be left out "
        "when experiment_type is an ISPyB experimentType"
    )
    experiment_type: str = Field(
        "default", description="e.g. rotation, gridscan, or ISPyB's SAD, Mesh3D, OSC"
    )
    beamline: str = Field(description="Beamline name, e.g. i03")
    visit: str = Field(description="Visit, e.g. mx12345-1")
    data_collection_id: LimsId | None = Field(
        None,
        description="LIMS dataCollectionId (1 to 2**31 - 1); absent: the gateway "
        "creates the DataCollection",
    )
    data_files: list[str] = Field(
        description="Absolute path(s) of the data (NXmx: master); or `data_file`"
    )
    image_range: tuple[ImageNumber, ImageNumber] | None = Field(
        None, description="First, last image (1-based); or `num_images`"
    )
    grid: GridScan | None = Field(None, description="Grid geometry of a grid scan")
    processing: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the flow's processing parameters"
    )

    @model_validator(mode="before")
    @classmethod
    def _usual_keys(cls, value: Any) -> Any:
        """`data_file`, `num_images` and ISPyB experiment types, read as our keys."""
        if not isinstance(value, dict):
            return value
        document = dict(value)
        if "data_files" not in document and "data_file" in document:
            document["data_files"] = document["data_file"]
        images = document.get("num_images")
        if document.get("image_range") is None and isinstance(images, int) and images >= 1:
            document["image_range"] = (1, images)
        ispyb_type = document.get("experiment_type")
        if isinstance(ispyb_type, str) and ispyb_type in ISPYB_EXPERIMENT_TYPES:
            try:
                technique, experiment_type = technique_for_experiment_type(ispyb_type)
            except ValueError:
                if "technique" not in document:
                    raise  # names the value and why no technique takes it
                return document
            if document.setdefault("technique", technique) == technique:
                document["experiment_type"] = experiment_type
        return document

    @field_validator("data_files", mode="before")
    @classmethod
    def _one_path_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def with_collection(self, data_collection_id: int) -> BlueskyStart:
        """This start with the dataCollectionId the gateway created for it."""
        return self.model_copy(update={"data_collection_id": data_collection_id})


class BlueskyStop(BaseModel):
    """The keys of a stop document the gateway reads (event-model RunStop)."""

    model_config = ConfigDict(extra="allow")

    uid: str = Field(min_length=1, max_length=200, description="Stop uid; the event id")
    run_start: str = Field(min_length=1, max_length=200, description="uid of the start")
    exit_status: Literal["success", "abort", "fail"] = Field(description="How the run ended")
    time: EpochSeconds | None = Field(None, description="Stop time, seconds since the epoch")
    reason: str | None = Field(None, description="Why the run ended (abort, fail)")


# CollectionEvent field -> the start-document key it comes from.
_START_KEYS = {"collection_id": "data_collection_id", "processing_parameters": "processing"}


def parse_bluesky_start(document: dict[str, Any]) -> BlueskyStart:
    try:
        return BlueskyStart.model_validate(document)
    except ValidationError as error:
        raise _invalid_document(error) from None


def parse_bluesky_stop(document: dict[str, Any]) -> BlueskyStop:
    try:
        return BlueskyStop.model_validate(document)
    except ValidationError as error:
        raise _invalid_document(error) from None


def bluesky_start_to_event(start: BlueskyStart) -> CollectionEvent:
    """A `started` event from a start document."""
    return _event_from_start(start, CollectionEventKind.started, start.uid, start.time)


def bluesky_stop_to_event(
    stop: BlueskyStop, start: BlueskyStart | None, refused: str | None = None
) -> CollectionEvent:
    """A `finished` event for a stop document, completed from its stored start document.

    `refused`: why this gateway refused the start document, when it did.
    """
    if start is None and refused is not None:
        raise MappingError(
            f"doc.run_start: the start document {stop.run_start!r} was refused ({refused}); "
            "nothing of this run is processed",
            status_code=409,
        )
    if start is None:
        raise MappingError(
            f"doc.run_start: no start document with uid {stop.run_start!r} was accepted; "
            "post the start document first",
            status_code=409,
        )
    return _event_from_start(start, CollectionEventKind.finished, stop.uid, stop.time)


class InvalidDocument(MappingError):
    """A Bluesky document whose fields are wrong; `errors` name them as `doc.<key>`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(summarize_errors(errors), status_code=422)
        self.errors = errors


def _invalid_document(error: ValidationError) -> InvalidDocument:
    return InvalidDocument(describe_errors(error, "doc.", _START_KEYS))


def _event_from_start(
    start: BlueskyStart, kind: CollectionEventKind, event_id: str, time: float | None
) -> CollectionEvent:
    try:
        return CollectionEvent(
            event_id=event_id,
            kind=kind,
            technique=start.technique,
            experiment_type=start.experiment_type,
            beamline=start.beamline,
            visit=start.visit,
            collection_id=start.data_collection_id or PROVISIONAL_COLLECTION_ID,
            data_files=start.data_files,
            image_range=start.image_range,
            grid=start.grid,
            processing_parameters=start.processing,
            source="bluesky",
            timestamp=datetime.fromtimestamp(time, UTC) if time is not None else datetime.now(UTC),
        )
    except ValidationError as error:
        raise _invalid_document(error) from None
