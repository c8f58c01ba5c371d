"""The LIMS client: the core ISPyB writes and reads every technique shares.

One idempotent writer, one short transaction per call, on SQLite, PostgreSQL and
MariaDB. A rerun is a new flow run, so a new `run_key`, so a new ProcessingJob with its
own program, attachments and result rows. Each technique's own rows are written by its
`techniques/<t>/records.py` through `Lims.transaction` and the helpers of
`prefect_beamline.lims.transaction`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.lims.collections import (
    CollectionDescription,
    join_visit,
    prefix_and_suffix,
    read_grid,
    split_data_file,
    split_visit,
    upsert_grid,
    upsert_session,
)
from prefect_beamline.lims.engine import WRITE_OPTION, display_url, engine_for, forget_engine
from prefect_beamline.lims.schema import (
    ATTACHMENT_FILE_TYPES,
    DISPLAY_NAME_LENGTH,
    EVENT_ID_LENGTH,
    PARAMETER_KEY_LENGTH,
    PARAMETER_VALUE_LENGTH,
    PATH_LENGTH,
    RECIPE_LENGTH,
    TEXT_LENGTH,
    AutoProcProgram,
    AutoProcProgramAttachment,
    Base,
    BLSession,
    DataCollection,
    DataCollectionGroup,
    ProcessingJob,
    ProcessingJobParameter,
    ProcessingJobTrigger,
    Proposal,
    ispyb_experiment_type,
    technique_for_experiment_type,
)
from prefect_beamline.lims.transaction import (
    ATTEMPTS,
    backoff_s,
    check_length,
    clip,
    first_or_add,
    lock_program,
    naive_utc,
    now,
    retrying,
    rows_by_key,
    transaction,
)

# ProcessingJobParameter keys the writer reserves for itself.
RUN_KEY_PARAMETER = "prefect_flow_run_id"
TRIGGERED_BY_PARAMETER = "triggered_by"
# ISPyB's ProcessingJob has no column for it: the OpenTelemetry trace id of the run.
TRACE_ID_PARAMETER = "trace_id"
_RESERVED_PARAMETERS = (RUN_KEY_PARAMETER, TRIGGERED_BY_PARAMETER, TRACE_ID_PARAMETER)
# Keys of what a job records about itself beside its parameters (`job_record`): what a
# rerun changed and the job it started from, links to its run, its provenance.
RECORD_PREFIXES = ("rerun.", "prefect.", "provenance.")
# GDA's DataCollection.runStatus at the end of a good collection.
RUN_STATUS_SUCCESSFUL = "DataCollection Successful"

ProgramStatus = Literal["queued", "running", "success", "failed"]


class EventAlreadyProcessed(Exception):
    """An automatic run's event already has its job, recorded by another flow run."""

    def __init__(self, event_id: str, recipe: str, processing_job_id: int, run_key: str) -> None:
        super().__init__(
            f"event {event_id} was already processed by {recipe} job {processing_job_id} "
            f"(flow run {run_key})"
        )
        self.event_id = event_id
        self.recipe = recipe
        self.processing_job_id = processing_job_id
        self.run_key = run_key

    def __reduce__(self) -> tuple[type[EventAlreadyProcessed], tuple[str, str, int, str]]:
        return (type(self), (self.event_id, self.recipe, self.processing_job_id, self.run_key))


@dataclass(frozen=True)
class ProcessingJobSummary:
    """One processing job of a collection, as the CLI, demo and tests report it."""

    processing_job_id: int
    data_collection_id: int
    recipe: str | None
    display_name: str | None
    automatic: bool
    triggered_by: str | None
    run_key: str | None
    parameters: dict[str, Any]
    comments: str | None
    submitted: datetime
    program_id: int | None
    program_status: ProgramStatus
    program_message: str | None
    program_start: datetime | None = None
    program_end: datetime | None = None
    programs: str | None = None  # package, version, recipe and method
    attachments: list[str] = field(default_factory=list)
    trace_id: str | None = None
    # `rerun.changed`, `rerun.based_on_job`, `prefect.flow_run_url`, `provenance.version`...
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> dict[str, Any]:
        """What this job's run changed from its base (the latest job, or the DAQ's)."""
        return dict(self.record.get("rerun.changed") or {})

    @property
    def results_dir(self) -> str | None:
        """Folder of the first attachment: where the job wrote its results."""
        return str(Path(self.attachments[0]).parent) if self.attachments else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "results_dir": self.results_dir}


@dataclass(frozen=True)
class OpenJob:
    """A job whose program is still running, with the flow run (run key) it belongs to."""

    processing_job_id: int
    program_id: int
    recipe: str
    run_key: str


class Lims:
    """Idempotent writes and reads of the ISPyB subset in `prefect_beamline.lims.schema`.

    Cheap to construct: instances for the same URL share one engine (connection pool),
    so a task may open its own. Safe to share between threads.

    Example:
        >>> lims = Lims("sqlite:///lims.db")
        >>> lims.create_schema()
        >>> lims.get_collection(42) is None
        True
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = engine_for(url)

    @classmethod
    def from_settings(cls) -> Lims:
        """The LIMS named by PREFECT_BEAMLINE_LIMS_URL (default: SQLite in the home folder)."""
        from prefect_beamline.settings import get_settings

        return cls(get_settings().resolved_lims_url)

    def __repr__(self) -> str:
        return f"Lims({display_url(self.url)!r})"

    def __reduce__(self) -> tuple[type[Lims], tuple[str]]:
        return (Lims, (self.url,))

    def close(self) -> None:
        """Close pooled connections (the Lims still works: it reconnects when used)."""
        forget_engine(self.url, self.engine)

    def create_schema(self) -> None:
        """Create the tables that are missing (idempotent; leaves existing tables alone).

        Safe when several processes start on a fresh database: one that loses the race
        to create a table ("already exists") checks again and finds it. On a real ISPyB
        database nothing is created or altered: the tables exist.
        """
        from prefect_beamline.techniques import import_records

        import_records()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.engine.connect() as connection:
                    connection.execution_options(**{WRITE_OPTION: True})
                    with connection.begin():
                        Base.metadata.create_all(connection)
                return
            except DBAPIError:
                if attempt == ATTEMPTS:
                    raise
                time.sleep(backoff_s(attempt))

    # -- data collections ---------------------------------------------------------------

    @retrying
    def record_data_collection(self, event: CollectionEvent) -> int:
        """Upsert the collection as announced, with its proposal, session, group and grid.

        The DataCollection row gets `dataCollectionId = event.collection_id`; the first
        data file (for NXmx the master file) becomes imageDirectory + fileTemplate. Later
        announcements update the row; a finished one sets endTime and runStatus.
        """
        experiment_type = ispyb_experiment_type(event.technique, event.experiment_type)
        code, number, visit_number = split_visit(event.visit)
        image_directory, file_template = split_data_file(event.data_files[0])
        prefix, suffix = prefix_and_suffix(file_template)
        announced = naive_utc(event.timestamp)
        with self.transaction(write=True) as session:
            collection = session.get(
                DataCollection, event.collection_id, with_for_update={"key_share": True}
            )
            session_id = upsert_session(
                session, event.visit, code, number, visit_number, event.beamline
            )
            if collection is None:
                group = DataCollectionGroup(sessionId=session_id, experimentType=experiment_type)
                session.add(group)
                session.flush()
                collection = DataCollection(
                    dataCollectionId=event.collection_id,
                    dataCollectionGroupId=group.dataCollectionGroupId,
                    startTime=announced,
                )
                session.add(collection)
            else:
                group = session.get_one(DataCollectionGroup, collection.dataCollectionGroupId)
                group.sessionId = session_id
                if not _same_experiment(group.experimentType, event):  # keep the DAQ's SAD
                    group.experimentType = experiment_type
            collection.imageDirectory = image_directory
            collection.fileTemplate = file_template
            collection.imagePrefix = prefix
            collection.imageSuffix = suffix
            if event.image_range is not None:
                first, last = event.image_range
                collection.startImageNumber = first
                collection.numberOfImages = last - first + 1
            if event.kind == CollectionEventKind.started:
                collection.startTime = announced
            elif event.kind == CollectionEventKind.finished:
                collection.endTime = announced
                collection.runStatus = RUN_STATUS_SUCCESSFUL
            session.flush()
            if event.grid is not None:
                upsert_grid(session, collection, event.grid)
        return event.collection_id

    def create_data_collection(self, event: CollectionEvent) -> int:
        """A new DataCollection for an announcement that has no id yet (as Hyperion's
        ISPyB callback makes one during the run); returns its dataCollectionId.

        The id is the largest one + 1, taken under the write lock (a unique-key race on
        a server database is retried by `retrying`); `event.collection_id` is ignored.
        """
        new_id = self._allocate_collection(event)
        self.record_data_collection(event.model_copy(update={"collection_id": new_id}))
        return new_id

    @retrying
    def _allocate_collection(self, event: CollectionEvent) -> int:
        experiment_type = ispyb_experiment_type(event.technique, event.experiment_type)
        code, number, visit_number = split_visit(event.visit)
        with self.transaction(write=True) as session:
            new_id = (session.scalar(select(func.max(DataCollection.dataCollectionId))) or 0) + 1
            session_id = upsert_session(
                session, event.visit, code, number, visit_number, event.beamline
            )
            group = DataCollectionGroup(sessionId=session_id, experimentType=experiment_type)
            session.add(group)
            session.flush()
            session.add(
                DataCollection(
                    dataCollectionId=new_id,
                    dataCollectionGroupId=group.dataCollectionGroupId,
                    startTime=naive_utc(event.timestamp),
                )
            )
        return new_id

    @retrying
    def get_collection(self, data_collection_id: int) -> CollectionDescription | None:
        """The collection as the flows need it, or None when the id is unknown."""
        with self.transaction(write=False) as session:
            row = session.execute(
                select(DataCollection, DataCollectionGroup, BLSession, Proposal)
                .join(
                    DataCollectionGroup,
                    DataCollection.dataCollectionGroupId
                    == DataCollectionGroup.dataCollectionGroupId,
                )
                .join(BLSession, DataCollectionGroup.sessionId == BLSession.sessionId)
                .join(Proposal, BLSession.proposalId == Proposal.proposalId)
                .where(DataCollection.dataCollectionId == data_collection_id)
            ).first()
            if row is None:
                return None
            collection, group, blsession, proposal = row
            grid = read_grid(session, collection)
        technique, experiment_type = technique_for_experiment_type(group.experimentType)
        if not collection.imageDirectory or not collection.fileTemplate:
            raise ValueError(
                f"DataCollection {data_collection_id} has no imageDirectory/fileTemplate "
                f"({collection.imageDirectory!r}, {collection.fileTemplate!r}): no data file"
            )
        image_range = None
        if collection.numberOfImages:
            first = collection.startImageNumber or 1
            image_range = (first, first + collection.numberOfImages - 1)
        return CollectionDescription(
            collection_id=collection.dataCollectionId,
            beamline=blsession.beamLineName or "",
            visit=join_visit(
                proposal.proposalCode, proposal.proposalNumber, blsession.visit_number
            ),
            technique=technique,
            experiment_type=experiment_type,
            data_files=[str(PurePosixPath(collection.imageDirectory) / collection.fileTemplate)],
            image_range=image_range,
            grid=grid,
        )

    # -- processing jobs and programs ---------------------------------------------------

    @retrying
    def record_processing_job(
        self,
        *,
        data_collection_id: int,
        recipe: str,
        display_name: str,
        automatic: bool,
        triggered_by: str,
        parameters: Mapping[str, object],
        run_key: str,
        trace_id: str | None = None,
        trigger_event: str | None = None,
        record: Mapping[str, object] | None = None,
    ) -> int:
        """The ProcessingJob of one flow run on one collection, created once per run_key.

        `run_key` is the Prefect flow-run id: a retried task gets the same job back, a
        rerun (a new flow run) gets a new one. Parameters are stored JSON-encoded, with
        `triggered_by`, the run key and the trace id (`trace_id`, to find the run's
        trace), as ProcessingJobParameter rows.

        `trigger_event` (automatic runs: the DAQ event id) makes the job the event's one
        job for this recipe, in the same transaction: another run key asking for the
        same event and recipe gets `EventAlreadyProcessed` naming the first job, durably
        and across processes (a racing insert loses on the unique key and, retried,
        finds the winner).

        `record` (keys starting with one of RECORD_PREFIXES) is stored the same way and
        read back apart from the parameters; `{job}` in `display_name` becomes the id.
        """
        if not run_key:
            raise ValueError("run_key must not be empty: pass the Prefect flow-run id")
        check_length(recipe, RECIPE_LENGTH, "ProcessingJob.recipe")
        if trigger_event is not None:
            check_length(trigger_event, EVENT_ID_LENGTH, "ProcessingJobTrigger.eventId")
        values = _encode_parameters(parameters)
        values[RUN_KEY_PARAMETER] = check_length(
            run_key, PARAMETER_VALUE_LENGTH, "ProcessingJobParameter.parameterValue of run_key"
        )
        values[TRIGGERED_BY_PARAMETER] = clip(triggered_by, PARAMETER_VALUE_LENGTH)
        if trace_id:
            values[TRACE_ID_PARAMETER] = trace_id
        for key, value in (record or {}).items():
            if not key.startswith(RECORD_PREFIXES):
                raise ValueError(f"job record key {key!r} must start with {RECORD_PREFIXES}")
            values[key] = _encode_parameters({key: value}, record=True)[key]
        with self.transaction(write=True) as session:
            collection = session.get(
                DataCollection, data_collection_id, with_for_update={"key_share": True}
            )
            if collection is None:
                raise ValueError(
                    f"DataCollection {data_collection_id} is not in the LIMS; "
                    "record_data_collection first"
                )
            existing = session.scalar(
                select(ProcessingJob.processingJobId)
                .join(
                    ProcessingJobParameter,
                    ProcessingJobParameter.processingJobId == ProcessingJob.processingJobId,
                )
                .where(
                    ProcessingJob.dataCollectionId == data_collection_id,
                    ProcessingJobParameter.parameterKey == RUN_KEY_PARAMETER,
                    ProcessingJobParameter.parameterValue == run_key,
                )
                .order_by(ProcessingJob.processingJobId)
                .limit(1)
            )
            if existing is not None:
                return int(existing)
            if trigger_event:
                _refuse_second_job(session, trigger_event, recipe)
            job = ProcessingJob(
                dataCollectionId=data_collection_id,
                displayName=clip(display_name, DISPLAY_NAME_LENGTH),
                comments=clip(
                    f"{'automatic' if automatic else 'manual'}, triggered by {triggered_by}",
                    TEXT_LENGTH,
                ),
                recordTimestamp=now(),
                recipe=recipe,
                automatic=automatic,
            )
            session.add(job)
            session.flush()
            job.displayName = clip(
                display_name.replace("{job}", str(job.processingJobId)), DISPLAY_NAME_LENGTH
            )
            session.add_all(
                ProcessingJobParameter(
                    processingJobId=job.processingJobId, parameterKey=key, parameterValue=value
                )
                for key, value in values.items()
            )
            if trigger_event:
                session.add(
                    ProcessingJobTrigger(
                        processingJobId=job.processingJobId,
                        eventId=trigger_event,
                        recipe=recipe,
                        recordTimeStamp=now(),
                    )
                )
                session.flush()
            return job.processingJobId

    @retrying
    def start_program(
        self, *, processing_job_id: int, programs: str, command_line: str, environment: str
    ) -> int:
        """The job's AutoProcProgram, marked running (processingStatus NULL).

        One program per job: calling again returns the same id; if the program had
        finished (a retried flow run), it is running again from now.
        """
        with self.transaction(write=True) as session:
            job = session.get(ProcessingJob, processing_job_id, with_for_update={"key_share": True})
            if job is None:
                raise ValueError(f"ProcessingJob {processing_job_id} does not exist")
            program = session.scalar(
                select(AutoProcProgram)
                .filter_by(processingJobId=processing_job_id)
                .order_by(AutoProcProgram.autoProcProgramId)
                .limit(1)
            )
            moment = now()
            if program is None:
                program = AutoProcProgram(processingJobId=processing_job_id)
                session.add(program)
                program.processingStartTime = moment
            elif program.processingStatus is not None or program.processingEndTime is not None:
                program.processingStatus = None
                program.processingMessage = None
                program.processingEndTime = None
                program.processingStartTime = moment
            program.processingPrograms = clip(programs, TEXT_LENGTH)
            program.processingCommandLine = clip(command_line, TEXT_LENGTH)
            program.processingEnvironment = clip(environment, TEXT_LENGTH)
            program.recordTimeStamp = moment
            session.flush()
            return program.autoProcProgramId

    @retrying
    def finish_program(self, program_id: int, *, success: bool, message: str) -> None:
        """Mark the program successful (1) or failed (0), with a message for people.

        Messages longer than ISPyB's 255 characters are cut (their start is kept).
        """
        with self.transaction(write=True) as session:
            program = session.get(AutoProcProgram, program_id, with_for_update={"key_share": True})
            if program is None:
                raise ValueError(f"AutoProcProgram {program_id} does not exist")
            moment = now()
            program.processingStatus = success
            program.processingMessage = clip(message, TEXT_LENGTH)
            program.processingEndTime = moment
            program.recordTimeStamp = moment

    # -- results --------------------------------------------------------------------------

    @retrying
    def add_attachment(
        self, program_id: int, path: Path, file_type: str, importance_rank: int | None = None
    ) -> int:
        """Register a result file of the program, once per (program, path).

        `file_type` is ISPyB's: Log, Result, Graph, Debug or Input. ISPyB reads a higher
        `importance_rank` (0-255) as more important within a file type.
        """
        path = Path(path)
        if not path.is_absolute():
            raise ValueError(f"attachment path must be absolute, got {str(path)!r}")
        if file_type not in ATTACHMENT_FILE_TYPES:
            raise ValueError(
                f"attachment fileType must be one of {ATTACHMENT_FILE_TYPES}, got {file_type!r}"
            )
        if importance_rank is not None and not 0 <= importance_rank <= 255:
            raise ValueError(f"importance_rank must be 0-255, got {importance_rank}")
        directory = check_length(
            str(path.parent), PATH_LENGTH, "AutoProcProgramAttachment.filePath"
        )
        name = check_length(path.name, PATH_LENGTH, "AutoProcProgramAttachment.fileName")
        with self.transaction(write=True) as session:
            lock_program(session, program_id)
            row = first_or_add(
                session,
                AutoProcProgramAttachment,
                {"autoProcProgramId": program_id, "filePath": directory, "fileName": name},
            )
            row.fileType = file_type
            row.importanceRank = importance_rank
            row.recordTimeStamp = now()
            session.flush()
            return row.autoProcProgramAttachmentId

    # -- reports --------------------------------------------------------------------------

    @retrying
    def open_jobs(self, recipes: Sequence[str], max_age: timedelta) -> list[OpenJob]:
        """Jobs of these recipes, recorded within `max_age`, whose program still runs.

        What crash recovery checks against Prefect: a job whose flow run has ended
        without finishing it (the runner was killed) must not stay open.
        """
        with self.transaction(write=False) as session:
            rows = session.execute(
                select(
                    ProcessingJob.processingJobId,
                    AutoProcProgram.autoProcProgramId,
                    ProcessingJob.recipe,
                    ProcessingJobParameter.parameterValue,
                )
                .join(
                    AutoProcProgram,
                    AutoProcProgram.processingJobId == ProcessingJob.processingJobId,
                )
                .join(
                    ProcessingJobParameter,
                    and_(
                        ProcessingJobParameter.processingJobId == ProcessingJob.processingJobId,
                        ProcessingJobParameter.parameterKey == RUN_KEY_PARAMETER,
                    ),
                )
                .where(
                    ProcessingJob.recipe.in_(list(recipes)),
                    ProcessingJob.recordTimestamp >= now() - max_age,
                    AutoProcProgram.processingStatus.is_(None),
                )
                .order_by(ProcessingJob.processingJobId)
            ).all()
        return [
            OpenJob(job, program, recipe or "", run_key or "")
            for job, program, recipe, run_key in rows
        ]

    @retrying
    def jobs_for_collection(self, data_collection_id: int) -> list[ProcessingJobSummary]:
        """Every processing job of a collection, oldest first, with its program's state."""
        with self.transaction(write=False) as session:
            jobs = session.scalars(
                select(ProcessingJob)
                .filter_by(dataCollectionId=data_collection_id)
                .order_by(ProcessingJob.processingJobId)
            ).all()
            if not jobs:
                return []
            job_ids = [job.processingJobId for job in jobs]
            parameters = rows_by_key(
                session,
                ProcessingJobParameter.processingJobId,
                job_ids,
                ProcessingJobParameter.parameterKey,
                ProcessingJobParameter.parameterValue,
                order_by=[ProcessingJobParameter.processingJobParameterId],
            )
            programs: dict[int, AutoProcProgram] = {}
            for program in session.scalars(
                select(AutoProcProgram)
                .where(AutoProcProgram.processingJobId.in_(job_ids))
                .order_by(AutoProcProgram.autoProcProgramId)
            ):
                programs.setdefault(program.processingJobId or 0, program)
            attachments = rows_by_key(
                session,
                AutoProcProgramAttachment.autoProcProgramId,
                [program.autoProcProgramId for program in programs.values()],
                AutoProcProgramAttachment.filePath,
                AutoProcProgramAttachment.fileName,
                order_by=[AutoProcProgramAttachment.autoProcProgramAttachmentId],
            )
        summaries = []
        for job in jobs:
            values = {
                key or "": value or "" for key, value in parameters.get(job.processingJobId, [])
            }
            triggered_by = values.pop(TRIGGERED_BY_PARAMETER, None)
            run_key = values.pop(RUN_KEY_PARAMETER, None)
            trace_id = values.pop(TRACE_ID_PARAMETER, None)
            record = {
                key: _decode(values.pop(key))
                for key in list(values)
                if key.startswith(RECORD_PREFIXES)
            }
            job_program = programs.get(job.processingJobId)
            job_program_id = job_program.autoProcProgramId if job_program else None
            summaries.append(
                ProcessingJobSummary(
                    processing_job_id=job.processingJobId,
                    data_collection_id=data_collection_id,
                    recipe=job.recipe,
                    display_name=job.displayName,
                    automatic=bool(job.automatic),
                    triggered_by=triggered_by,
                    run_key=run_key,
                    parameters={key: _decode(value) for key, value in values.items()},
                    comments=job.comments,
                    submitted=job.recordTimestamp,
                    program_id=job_program_id,
                    program_status=_program_status(job_program),
                    program_message=job_program.processingMessage if job_program else None,
                    program_start=job_program.processingStartTime if job_program else None,
                    program_end=job_program.processingEndTime if job_program else None,
                    programs=job_program.processingPrograms if job_program else None,
                    attachments=[
                        str(Path(directory) / name)
                        for directory, name in attachments.get(job_program_id or -1, [])
                    ],
                    trace_id=trace_id,
                    record=record,
                )
            )
        return summaries

    # -- plumbing -------------------------------------------------------------------------

    def transaction(self, *, write: bool) -> contextlib.AbstractContextManager[Session]:
        """One short transaction on this LIMS; technique records write through it."""
        return transaction(self.engine, write=write)


def _same_experiment(ispyb_type: str | None, event: CollectionEvent) -> bool:
    """Whether ISPyB's value already says the event's technique and experiment type."""
    try:
        return technique_for_experiment_type(ispyb_type) == (event.technique, event.experiment_type)
    except ValueError:
        return False


def _encode_parameters(parameters: Mapping[str, object], *, record: bool = False) -> dict[str, str]:
    encoded: dict[str, str] = {}
    for key, value in parameters.items():
        if key in _RESERVED_PARAMETERS or (key.startswith(RECORD_PREFIXES) and not record):
            raise ValueError(
                f"processing parameter {key!r} is reserved by the LIMS writer "
                f"({', '.join(_RESERVED_PARAMETERS)})"
            )
        check_length(key, PARAMETER_KEY_LENGTH, "ProcessingJobParameter.parameterKey")
        encoded[key] = check_length(
            json.dumps(value, default=_json_default, sort_keys=True),
            PARAMETER_VALUE_LENGTH,
            f"JSON of processing parameter {key!r}",
        )
    return encoded


def _refuse_second_job(session: Session, event_id: str, recipe: str) -> None:
    """Raise `EventAlreadyProcessed` if the event already has a job of this recipe."""
    job_id = session.scalar(
        select(ProcessingJobTrigger.processingJobId).filter_by(eventId=event_id, recipe=recipe)
    )
    if job_id is None:
        return
    run_key = session.scalar(
        select(ProcessingJobParameter.parameterValue).filter_by(
            processingJobId=job_id, parameterKey=RUN_KEY_PARAMETER
        )
    )
    raise EventAlreadyProcessed(event_id, recipe, job_id, run_key or "unknown")


def _json_default(value: object) -> object:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _program_status(program: AutoProcProgram | None) -> ProgramStatus:
    if program is None:
        return "queued"
    if program.processingStatus is None:
        return "running"
    return "success" if program.processingStatus else "failed"
