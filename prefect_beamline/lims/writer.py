"""The one writer of LIMS rows: idempotent, one short transaction per call, any of
SQLite, PostgreSQL and MariaDB.

Every write is safe to repeat: a retried Prefect task calls it again with the same
arguments and finds its rows already there. A rerun is a new flow run, so a new
`run_key`, so a new ProcessingJob with its own program, attachments and per-image rows.

Concurrent writers (Prefect task threads, several flow-run processes, several hosts) are
serialised where it matters by locking the parent row first (`SELECT ... FOR UPDATE`
of the DataCollection, ProcessingJob or AutoProcProgram being written under; on SQLite
every write transaction is `BEGIN IMMEDIATE`), then reading and writing. Lock waits,
deadlocks, "database is locked" and unique-key races retry the whole call briefly.

Visits: an ISPyB visit is `<proposalCode><proposalNumber>-<visit_number>`, e.g.
"mx12345-1" -> Proposal ("mx", "12345"), BLSession visit_number 1. A visit that does not
parse so (other facilities' conventions, e.g. "IH-MX-2532") is stored whole as the
proposalCode with an empty proposalNumber and visit_number 0, and reads back unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan, Technique
from prefect_beamline.lims.schema import (
    ATTACHMENT_FILE_TYPES,
    CTF,
    DISPLAY_NAME_LENGTH,
    PARAMETER_KEY_LENGTH,
    PARAMETER_VALUE_LENGTH,
    PATH_LENGTH,
    RECIPE_LENGTH,
    TEXT_LENGTH,
    XRAY_CENTRING_STATUSES,
    AutoProcProgram,
    AutoProcProgramAttachment,
    Base,
    BLSession,
    DataCollection,
    DataCollectionGroup,
    GridInfo,
    ImageQualityIndicators,
    MotionCorrection,
    MotionCorrectionDrift,
    Movie,
    ProcessingJob,
    ProcessingJobParameter,
    Proposal,
    PtychographyResult,
    Tomogram,
    XrayCentring,
    XrayCentringResult,
    ispyb_experiment_type,
    technique_for_experiment_type,
)
from prefect_beamline.lims.tomogram import TomogramRecord

__all__ = [
    "RUN_KEY_PARAMETER",
    "TRIGGERED_BY_PARAMETER",
    "CTFResult",
    "CollectionDescription",
    "EMMovieResult",
    "GridResult",
    "ImageQuality",
    "Lims",
    "MotionResult",
    "MovieRecord",
    "ProcessingJobSummary",
    "ispyb_experiment_type",
    "join_visit",
    "split_visit",
    "technique_for_experiment_type",
]

log = logging.getLogger(__name__)

# ProcessingJobParameter keys the writer reserves for itself.
RUN_KEY_PARAMETER = "prefect_flow_run_id"
TRIGGERED_BY_PARAMETER = "triggered_by"
_RESERVED_PARAMETERS = (RUN_KEY_PARAMETER, TRIGGERED_BY_PARAMETER)
# GDA's DataCollection.runStatus at the end of a good collection.
RUN_STATUS_SUCCESSFUL = "DataCollection Successful"

_VISIT = re.compile(r"^([A-Za-z]+)(\d+)-(0|[1-9]\d*)$")
_TEMPLATE_STEM = re.compile(r"^(.*?)(?:_master|_#+)?$")

_ATTEMPTS = 6
_FIRST_BACKOFF_S = 0.05
_SQLITE_BUSY_TIMEOUT_S = 30
_BULK_ROWS = 1000
# PostgreSQL SQLSTATEs and MySQL/MariaDB error numbers worth retrying: serialization
# failure, deadlock, lock not available, unique violation (a racing insert won).
_TRANSIENT_PG_CODES = frozenset({"40001", "40P01", "55P03", "23505"})
_TRANSIENT_MYSQL_ERRORS = frozenset({1205, 1213, 1062})
_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "unique constraint")

P = ParamSpec("P")
R = TypeVar("R")
ProgramStatus = Literal["queued", "running", "success", "failed"]


@dataclass(frozen=True, slots=True)
class ImageQuality:
    """Per-image analysis of one image: one ImageQualityIndicators row.

    Stored as Zocalo stores DIALS per-image analysis: spotTotal = n_spots,
    goodBraggCandidates = n_spots_no_ice, method1Res = method2Res = d_min_angstrom,
    totalIntegratedSignal = total_intensity.
    """

    image_number: int
    n_spots: int
    n_spots_no_ice: int | None = field(default=None, kw_only=True)
    total_intensity: float
    d_min_angstrom: float | None


@dataclass(frozen=True, slots=True)
class GridResult:
    """X-ray centre of a grid scan, in grid steps (0-based floats, x fast, y slow).

    `max_count` is the best per-image count. The optional ISPyB fields (position of the
    best image, size and summed count of the crystal region) are stored when given.
    """

    x: float
    y: float
    box_min_x: float
    box_min_y: float
    box_max_x: float
    box_max_y: float
    max_count: float
    status: str = "success"
    max_voxel_x: int | None = field(default=None, kw_only=True)
    max_voxel_y: int | None = field(default=None, kw_only=True)
    n_voxels: int | None = field(default=None, kw_only=True)
    total_count: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.status not in XRAY_CENTRING_STATUSES:
            raise ValueError(
                f"GridResult.status must be one of {XRAY_CENTRING_STATUSES}, got {self.status!r}"
            )
        if self.box_min_x > self.box_max_x or self.box_min_y > self.box_max_y:
            raise ValueError(
                f"GridResult bounding box min ({self.box_min_x}, {self.box_min_y}) exceeds "
                f"max ({self.box_max_x}, {self.box_max_y})"
            )


@dataclass(frozen=True)
class CollectionDescription:
    """What the flows need to know about a data collection, read from the LIMS."""

    collection_id: int
    beamline: str
    visit: str
    technique: Technique
    experiment_type: str
    data_files: list[str]
    image_range: tuple[int, int] | None
    grid: GridScan | None


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
    attachments: list[str] = field(default_factory=list)
    n_image_quality_rows: int = 0
    grid_result: GridResult | None = None

    @property
    def results_dir(self) -> str | None:
        """Folder of the first attachment: where the job wrote its results."""
        return str(Path(self.attachments[0]).parent) if self.attachments else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "results_dir": self.results_dir}


def split_visit(visit: str) -> tuple[str, str, int]:
    """ISPyB visit "mx12345-1" -> ("mx", "12345", 1); anything else -> (visit, "", 0)."""
    match = _VISIT.match(visit)
    if match is None:
        return visit, "", 0
    return match.group(1), match.group(2), int(match.group(3))


def join_visit(proposal_code: str, proposal_number: str, visit_number: int) -> str:
    """The inverse of `split_visit`."""
    if not proposal_number:
        return proposal_code
    return f"{proposal_code}{proposal_number}-{visit_number}"


def _retrying(method: Callable[P, R]) -> Callable[P, R]:
    """Rerun the whole call (its transaction rolled back) on transient database errors."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 1
        while True:
            try:
                return method(*args, **kwargs)
            except DBAPIError as error:
                if attempt >= _ATTEMPTS or not _is_transient(error):
                    raise
                delay = _FIRST_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                log.debug(
                    "%s: transient database error (attempt %d), retrying in %.2f s: %s",
                    method.__name__,
                    attempt,
                    delay,
                    error.orig,
                )
                time.sleep(delay)
                attempt += 1

    return wrapper


def _is_transient(error: DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    orig = error.orig
    if getattr(orig, "pgcode", None) in _TRANSIENT_PG_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL_ERRORS:
        return True
    message = str(orig).lower()
    return any(text in message for text in _TRANSIENT_MESSAGES)


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
        self.engine: Engine = _engine_for(url)

    @classmethod
    def from_settings(cls) -> Lims:
        """The LIMS named by PREFECT_BEAMLINE_LIMS_URL (default: SQLite in the home folder)."""
        from prefect_beamline.settings import get_settings

        return cls(get_settings().resolved_lims_url)

    def __repr__(self) -> str:
        return f"Lims({make_url(self.url).render_as_string(hide_password=True)!r})"

    def __reduce__(self) -> tuple[type[Lims], tuple[str]]:
        return (Lims, (self.url,))

    def close(self) -> None:
        """Close pooled connections (the Lims still works: it reconnects when used)."""
        _forget_engine(self.url, self.engine)

    def create_schema(self) -> None:
        """Create the tables that are missing (idempotent; leaves existing tables alone).

        Safe when several processes start on a fresh database: one that loses the race
        to create a table ("already exists") checks again and finds it. On a real ISPyB
        database nothing is created or altered: the tables exist.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.engine.connect() as connection:
                    connection.execution_options(lims_write=True)
                    with connection.begin():
                        Base.metadata.create_all(connection)
                return
            except DBAPIError:
                if attempt == _ATTEMPTS:
                    raise
                time.sleep(_FIRST_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    # -- data collections ---------------------------------------------------------------

    @_retrying
    def record_data_collection(self, event: CollectionEvent) -> int:
        """Upsert the collection as announced, with its proposal, session, group and grid.

        The DataCollection row gets `dataCollectionId = event.collection_id`; the first
        data file (for NXmx the master file) becomes imageDirectory + fileTemplate. Later
        announcements update the row; a finished one sets endTime and runStatus.
        """
        experiment_type = ispyb_experiment_type(event.technique, event.experiment_type)
        code, number, visit_number = split_visit(event.visit)
        image_directory, file_template = _split_data_file(event.data_files[0])
        prefix, suffix = _prefix_and_suffix(file_template)
        announced = _naive_utc(event.timestamp)
        with self._transaction(write=True) as session:
            collection = session.get(
                DataCollection, event.collection_id, with_for_update={"key_share": True}
            )
            session_id = _upsert_session(
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
                _upsert_grid(session, collection, event.grid)
        return event.collection_id

    @_retrying
    def get_collection(self, data_collection_id: int) -> CollectionDescription | None:
        """The collection as the flows need it, or None when the id is unknown."""
        with self._transaction(write=False) as session:
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
            grid = _read_grid(session, collection)
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

    @_retrying
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
    ) -> int:
        """The ProcessingJob of one flow run on one collection, created once per run_key.

        `run_key` is the Prefect flow-run id: a retried task gets the same job back, a
        rerun (a new flow run) gets a new one. Parameters are stored JSON-encoded, with
        `triggered_by` and the run key, as ProcessingJobParameter rows.
        """
        if not run_key:
            raise ValueError("run_key must not be empty: pass the Prefect flow-run id")
        _check_length(recipe, RECIPE_LENGTH, "ProcessingJob.recipe")
        values = _encode_parameters(parameters)
        values[RUN_KEY_PARAMETER] = _check_length(
            run_key, PARAMETER_VALUE_LENGTH, "ProcessingJobParameter.parameterValue of run_key"
        )
        values[TRIGGERED_BY_PARAMETER] = _clip(triggered_by, PARAMETER_VALUE_LENGTH)
        with self._transaction(write=True) as session:
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
            job = ProcessingJob(
                dataCollectionId=data_collection_id,
                displayName=_clip(display_name, DISPLAY_NAME_LENGTH),
                comments=_clip(
                    f"{'automatic' if automatic else 'manual'}, triggered by {triggered_by}",
                    TEXT_LENGTH,
                ),
                recordTimestamp=_now(),
                recipe=recipe,
                automatic=automatic,
            )
            session.add(job)
            session.flush()
            session.add_all(
                ProcessingJobParameter(
                    processingJobId=job.processingJobId, parameterKey=key, parameterValue=value
                )
                for key, value in values.items()
            )
            return job.processingJobId

    @_retrying
    def start_program(
        self, *, processing_job_id: int, programs: str, command_line: str, environment: str
    ) -> int:
        """The job's AutoProcProgram, marked running (processingStatus NULL).

        One program per job: calling again returns the same id; if the program had
        finished (a retried flow run), it is running again from now.
        """
        with self._transaction(write=True) as session:
            job = session.get(ProcessingJob, processing_job_id, with_for_update={"key_share": True})
            if job is None:
                raise ValueError(f"ProcessingJob {processing_job_id} does not exist")
            program = session.scalar(
                select(AutoProcProgram)
                .filter_by(processingJobId=processing_job_id)
                .order_by(AutoProcProgram.autoProcProgramId)
                .limit(1)
            )
            now = _now()
            if program is None:
                program = AutoProcProgram(processingJobId=processing_job_id)
                session.add(program)
                program.processingStartTime = now
            elif program.processingStatus is not None or program.processingEndTime is not None:
                program.processingStatus = None
                program.processingMessage = None
                program.processingEndTime = None
                program.processingStartTime = now
            program.processingPrograms = _clip(programs, TEXT_LENGTH)
            program.processingCommandLine = _clip(command_line, TEXT_LENGTH)
            program.processingEnvironment = _clip(environment, TEXT_LENGTH)
            program.recordTimeStamp = now
            session.flush()
            return program.autoProcProgramId

    @_retrying
    def finish_program(self, program_id: int, *, success: bool, message: str) -> None:
        """Mark the program successful (1) or failed (0), with a message for people.

        Messages longer than ISPyB's 255 characters are cut (their start is kept).
        """
        with self._transaction(write=True) as session:
            program = session.get(AutoProcProgram, program_id, with_for_update={"key_share": True})
            if program is None:
                raise ValueError(f"AutoProcProgram {program_id} does not exist")
            now = _now()
            program.processingStatus = success
            program.processingMessage = _clip(message, TEXT_LENGTH)
            program.processingEndTime = now
            program.recordTimeStamp = now

    # -- results --------------------------------------------------------------------------

    @_retrying
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
        directory = _check_length(
            str(path.parent), PATH_LENGTH, "AutoProcProgramAttachment.filePath"
        )
        name = _check_length(path.name, PATH_LENGTH, "AutoProcProgramAttachment.fileName")
        with self._transaction(write=True) as session:
            _lock_program(session, program_id)
            row = session.scalar(
                select(AutoProcProgramAttachment).filter_by(
                    autoProcProgramId=program_id, filePath=directory, fileName=name
                )
            )
            if row is None:
                row = AutoProcProgramAttachment(
                    autoProcProgramId=program_id, filePath=directory, fileName=name
                )
                session.add(row)
            row.fileType = file_type
            row.importanceRank = importance_rank
            row.recordTimeStamp = _now()
            session.flush()
            return row.autoProcProgramAttachmentId

    @_retrying
    def record_image_quality(
        self, program_id: int, data_collection_id: int, rows: Sequence[ImageQuality]
    ) -> None:
        """Per-image rows of one program: inserted once, updated when written again.

        One bulk upsert per call (thousands of rows in well under a second); a row
        repeated within `rows` counts once, the last one winning.
        """
        by_image = {quality.image_number: quality for quality in rows}
        if not by_image:
            return
        negative = [number for number in by_image if number < 0]
        if negative:
            raise ValueError(f"image numbers must be >= 0, got {sorted(negative)[:5]}")
        now = _now()
        values = [
            {
                "dataCollectionId": data_collection_id,
                "autoProcProgramId": program_id,
                "imageNumber": quality.image_number,
                "spotTotal": quality.n_spots,
                "goodBraggCandidates": quality.n_spots_no_ice,
                "method1Res": quality.d_min_angstrom,
                "method2Res": quality.d_min_angstrom,
                "totalIntegratedSignal": quality.total_intensity,
                "recordTimeStamp": now,
            }
            for _, quality in sorted(by_image.items())
        ]
        table = ImageQualityIndicators.__table__
        assert isinstance(table, Table)
        with self._transaction(write=True) as session:
            _lock_program(session, program_id, data_collection_id)
            connection = session.connection()
            dialect = connection.dialect.name
            update = tuple(
                key for key in values[0] if key not in ("autoProcProgramId", "imageNumber")
            )
            conflict = ("autoProcProgramId", "imageNumber")
            statement = _upsert(dialect, table, conflict, update)
            if dialect == "postgresql":
                # SQLAlchemy batches an upsert into multi-row VALUES only when it returns
                # something; without, psycopg2 would send the rows one by one.
                statement = statement.returning(table.c.imageQualityIndicatorsId)
            for start in range(0, len(values), _BULK_ROWS):
                connection.execute(statement, values[start : start + _BULK_ROWS]).close()

    @_retrying
    def record_grid_result(
        self, program_id: int, data_collection_id: int, result: GridResult
    ) -> int:
        """The X-ray centring found by one program (one per program; rewriting updates it).

        Returns the XrayCentringResult id.
        """
        with self._transaction(write=True) as session:
            _lock_program(session, program_id, data_collection_id)
            collection = session.get(DataCollection, data_collection_id)
            if collection is None:
                raise ValueError(f"DataCollection {data_collection_id} does not exist")
            centring = session.scalar(select(XrayCentring).filter_by(autoProcProgramId=program_id))
            if centring is None:
                centring = XrayCentring(
                    dataCollectionGroupId=collection.dataCollectionGroupId,
                    autoProcProgramId=program_id,
                    xrayCentringType="2d",
                )
                session.add(centring)
            centring.status = result.status
            session.flush()
            row = session.scalar(
                select(XrayCentringResult)
                .filter_by(xrayCentringId=centring.xrayCentringId)
                .order_by(XrayCentringResult.xrayCentringResultId)
                .limit(1)
            )
            if row is None:
                row = XrayCentringResult(xrayCentringId=centring.xrayCentringId)
                session.add(row)
            row.centreOfMassX, row.centreOfMassY = result.x, result.y
            row.boundingBoxMinX, row.boundingBoxMinY = result.box_min_x, result.box_min_y
            row.boundingBoxMaxX, row.boundingBoxMaxY = result.box_max_x, result.box_max_y
            row.maxCount = result.max_count
            row.maxVoxelX, row.maxVoxelY = result.max_voxel_x, result.max_voxel_y
            row.numberOfVoxels = result.n_voxels
            row.totalCount = result.total_count
            session.flush()
            return row.xrayCentringResultId

    # -- reports --------------------------------------------------------------------------

    @_retrying
    def jobs_for_collection(self, data_collection_id: int) -> list[ProcessingJobSummary]:
        """Every processing job of a collection, oldest first, with its program's state."""
        with self._transaction(write=False) as session:
            jobs = session.scalars(
                select(ProcessingJob)
                .filter_by(dataCollectionId=data_collection_id)
                .order_by(ProcessingJob.processingJobId)
            ).all()
            if not jobs:
                return []
            job_ids = [job.processingJobId for job in jobs]
            parameters: dict[int, dict[str, str]] = defaultdict(dict)
            for job_id, key, value in session.execute(
                select(
                    ProcessingJobParameter.processingJobId,
                    ProcessingJobParameter.parameterKey,
                    ProcessingJobParameter.parameterValue,
                )
                .where(ProcessingJobParameter.processingJobId.in_(job_ids))
                .order_by(ProcessingJobParameter.processingJobParameterId)
            ):
                parameters[job_id or 0][key or ""] = value or ""
            programs: dict[int, AutoProcProgram] = {}
            for program in session.scalars(
                select(AutoProcProgram)
                .where(AutoProcProgram.processingJobId.in_(job_ids))
                .order_by(AutoProcProgram.autoProcProgramId)
            ):
                programs.setdefault(program.processingJobId or 0, program)
            program_ids = [program.autoProcProgramId for program in programs.values()]
            attachments: dict[int, list[str]] = defaultdict(list)
            n_quality: dict[int, int] = {}
            grids: dict[int, GridResult] = {}
            if program_ids:
                for program_id, directory, name in session.execute(
                    select(
                        AutoProcProgramAttachment.autoProcProgramId,
                        AutoProcProgramAttachment.filePath,
                        AutoProcProgramAttachment.fileName,
                    )
                    .where(AutoProcProgramAttachment.autoProcProgramId.in_(program_ids))
                    .order_by(AutoProcProgramAttachment.autoProcProgramAttachmentId)
                ):
                    attachments[program_id].append(str(Path(directory) / name))
                for program_id, count in session.execute(
                    select(ImageQualityIndicators.autoProcProgramId, func.count())
                    .where(ImageQualityIndicators.autoProcProgramId.in_(program_ids))
                    .group_by(ImageQualityIndicators.autoProcProgramId)
                ):
                    n_quality[program_id] = int(count)
                grids = _read_grid_results(session, program_ids)
        summaries = []
        for job in jobs:
            values = parameters[job.processingJobId]
            triggered_by = values.pop(TRIGGERED_BY_PARAMETER, None)
            run_key = values.pop(RUN_KEY_PARAMETER, None)
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
                    attachments=attachments.get(job_program_id or -1, []),
                    n_image_quality_rows=n_quality.get(job_program_id or -1, 0),
                    grid_result=grids.get(job_program_id or -1),
                )
            )
        return summaries

    @_retrying
    def image_quality(self, program_id: int) -> list[ImageQuality]:
        """The per-image rows of one program, by image number."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(
                    ImageQualityIndicators.imageNumber,
                    ImageQualityIndicators.spotTotal,
                    ImageQualityIndicators.goodBraggCandidates,
                    ImageQualityIndicators.totalIntegratedSignal,
                    ImageQualityIndicators.method2Res,
                )
                .filter_by(autoProcProgramId=program_id)
                .order_by(ImageQualityIndicators.imageNumber)
            ).all()
        return [
            ImageQuality(
                image_number=number,
                n_spots=spots or 0,
                n_spots_no_ice=no_ice,
                total_intensity=intensity or 0.0,
                d_min_angstrom=d_min,
            )
            for number, spots, no_ice, intensity, d_min in rows
        ]

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        """One short transaction; committed when the block ends, rolled back on error."""
        with self.engine.connect() as connection:
            if write:
                connection.execution_options(lims_write=True)
            with Session(bind=connection, expire_on_commit=False) as session, session.begin():
                yield session

    # --- tomography ---

    @_retrying
    def record_tomogram(
        self, program_id: int, data_collection_id: int, record: TomogramRecord
    ) -> int:
        """The volume one program reconstructed: one Tomogram row per program, updated
        when written again (a retried task). Returns the tomogramId."""
        volume = _check_length(record.volume_file, PATH_LENGTH, "Tomogram.volumeFile")
        images = [
            _check_length(image, PATH_LENGTH, "Tomogram preview path") if image else None
            for image in (record.central_slice_image, record.xz_image, record.yz_image)
        ]
        with self._transaction(write=True) as session:
            _lock_program(session, program_id, data_collection_id)
            row = session.scalar(select(Tomogram).filter_by(autoProcProgramId=program_id))
            if row is None:
                row = Tomogram(autoProcProgramId=program_id, dataCollectionId=data_collection_id)
                session.add(row)
            row.volumeFile = volume
            row.fileDirectory = _check_length(
                str(Path(volume).parent), PATH_LENGTH, "Tomogram.fileDirectory"
            )
            row.sizeX, row.sizeY, row.sizeZ = record.size_x, record.size_y, record.size_z
            row.pixelSpacing = record.pixel_spacing_angstrom
            row.centralSliceImage, row.projXZ, row.projYZ = images
            row.centreOfRotation = record.centre_of_rotation
            row.centreOfRotationMethod = _clip(record.centre_method, 20)
            row.recordTimeStamp = _now()
            session.flush()
            return row.tomogramId

    @_retrying
    def tomogram(self, program_id: int) -> TomogramRecord | None:
        """The volume a program reconstructed, or None."""
        with self._transaction(write=False) as session:
            row = session.scalar(select(Tomogram).filter_by(autoProcProgramId=program_id))
            if row is None:
                return None
            return TomogramRecord(
                volume_file=row.volumeFile or "",
                size_x=row.sizeX or 0,
                size_y=row.sizeY or 0,
                size_z=row.sizeZ or 0,
                centre_of_rotation=row.centreOfRotation or 0.0,
                centre_method=row.centreOfRotationMethod or "",
                pixel_spacing_angstrom=row.pixelSpacing,
                central_slice_image=row.centralSliceImage,
                xz_image=row.projXZ,
                yz_image=row.projYZ,
            )

    # --- ptycho ----------------------------------------------------------------------------

    @_retrying
    def record_ptycho_result(
        self, program_id: int, data_collection_id: int, result: PtychoResult
    ) -> int:
        """The reconstruction of one program (one row per program; rewriting updates it).

        Returns the PtychographyResult id.
        """
        if result.algorithm not in ("epie", "rpie"):
            raise ValueError(f"algorithm must be 'epie' or 'rpie', got {result.algorithm!r}")
        path = _check_length(
            str(result.reconstruction_file), PATH_LENGTH, "PtychographyResult.reconstructionFile"
        )
        with self._transaction(write=True) as session:
            _lock_program(session, program_id, data_collection_id)
            row = session.scalar(select(PtychographyResult).filter_by(autoProcProgramId=program_id))
            if row is None:
                row = PtychographyResult(
                    autoProcProgramId=program_id, dataCollectionId=data_collection_id
                )
                session.add(row)
            row.algorithm = result.algorithm
            row.iterations = result.iterations
            row.numberOfPositions = result.n_positions
            row.finalError = result.final_error
            row.objectPixelSize = result.object_pixel_m
            row.reconstructionFile = path
            row.recordTimeStamp = _now()
            session.flush()
            return row.ptychographyResultId

    @_retrying
    def ptycho_results(self, data_collection_id: int) -> list[PtychoResult]:
        """Every reconstruction of a collection, oldest first, with its job id."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(PtychographyResult, AutoProcProgram.processingJobId)
                .join(
                    AutoProcProgram,
                    AutoProcProgram.autoProcProgramId == PtychographyResult.autoProcProgramId,
                )
                .filter(PtychographyResult.dataCollectionId == data_collection_id)
                .order_by(PtychographyResult.ptychographyResultId)
            ).all()
        return [_ptycho_result(row, job_id) for row, job_id in rows]

    @_retrying
    def ptycho_result_of_job(self, processing_job_id: int) -> PtychoResult | None:
        """The reconstruction a processing job recorded, or None."""
        with self._transaction(write=False) as session:
            found = session.execute(
                select(PtychographyResult, AutoProcProgram.processingJobId)
                .join(
                    AutoProcProgram,
                    AutoProcProgram.autoProcProgramId == PtychographyResult.autoProcProgramId,
                )
                .filter(AutoProcProgram.processingJobId == processing_job_id)
                .order_by(PtychographyResult.ptychographyResultId)
                .limit(1)
            ).first()
        return _ptycho_result(found[0], found[1]) if found else None

    # --- em ---

    @_retrying
    def record_movie(
        self,
        data_collection_id: int,
        movie_path: str,
        *,
        n_frames: int | None = None,
        dose_per_frame: float | None = None,
    ) -> int:
        """The Movie row of one movie of a collection (numbered in order of arrival)."""
        _check_length(movie_path, PATH_LENGTH, "Movie.movieFullPath")
        with self._transaction(write=True) as session:
            collection = session.get(
                DataCollection, data_collection_id, with_for_update={"key_share": True}
            )
            if collection is None:
                raise ValueError(f"DataCollection {data_collection_id} does not exist")
            movie = session.scalar(
                select(Movie).filter_by(
                    dataCollectionId=data_collection_id, movieFullPath=movie_path
                )
            )
            if movie is None:
                count = session.scalar(
                    select(func.count())
                    .select_from(Movie)
                    .filter_by(dataCollectionId=data_collection_id)
                )
                movie = Movie(
                    dataCollectionId=data_collection_id,
                    movieFullPath=movie_path,
                    movieNumber=int(count or 0) + 1,
                    createdTimeStamp=_now(),
                )
                session.add(movie)
            if n_frames is not None:
                movie.numberOfFrames = n_frames
                if dose_per_frame is not None:
                    movie.fluence = dose_per_frame * n_frames
            session.flush()
            return movie.movieId

    @_retrying
    def movies_for_collection(self, data_collection_id: int) -> list[MovieRecord]:
        """Every movie recorded for a collection, by movie number."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(Movie.movieId, Movie.movieNumber, Movie.movieFullPath)
                .filter_by(dataCollectionId=data_collection_id)
                .order_by(Movie.movieNumber, Movie.movieId)
            ).all()
        return [MovieRecord(movie_id, number or 0, path or "") for movie_id, number, path in rows]

    @_retrying
    def record_motion_correction(
        self, program_id: int, data_collection_id: int, movie_id: int, result: MotionResult
    ) -> int:
        """MotionCorrection and its per-frame drift, once per (program, movie)."""
        for path in (result.micrograph_path, result.drift_plot_path, result.power_spectrum_path):
            _check_length(path, PATH_LENGTH, "MotionCorrection file path")
        with self._transaction(write=True) as session:
            _lock_program(session, program_id, data_collection_id)
            row = session.scalar(
                select(MotionCorrection).filter_by(autoProcProgramId=program_id, movieId=movie_id)
            )
            if row is None:
                row = MotionCorrection(autoProcProgramId=program_id, movieId=movie_id)
                session.add(row)
            row.dataCollectionId = data_collection_id
            row.imageNumber = result.movie_number
            row.firstFrame, row.lastFrame = 1, len(result.drift)
            row.dosePerFrame = result.dose_per_frame
            row.doseWeight = 1.0 if result.dose_weighted else 0.0
            row.totalMotion = result.total_motion
            row.averageMotionPerFrame = result.average_motion_per_frame
            row.micrographFullPath = result.micrograph_path
            row.driftPlotFullPath = result.drift_plot_path
            row.fftCorrectedFullPath = result.power_spectrum_path
            row.patchesUsedX, row.patchesUsedY = result.patches
            session.flush()
            mc_id = row.motionCorrectionId
            existing = {
                drift.frameNumber: drift
                for drift in session.scalars(
                    select(MotionCorrectionDrift).filter_by(motionCorrectionId=mc_id)
                )
            }
            for number, (dx, dy) in enumerate(result.drift, start=1):
                drift = existing.get(number)
                if drift is None:
                    drift = MotionCorrectionDrift(motionCorrectionId=mc_id, frameNumber=number)
                    session.add(drift)
                drift.deltaX, drift.deltaY = float(dx), float(dy)
            return mc_id

    @_retrying
    def record_ctf(self, program_id: int, motion_correction_id: int, result: CTFResult) -> int:
        """The CTF fit of one motion-corrected micrograph, once per program."""
        with self._transaction(write=True) as session:
            _lock_program(session, program_id)
            row = session.scalar(
                select(CTF).filter_by(
                    autoProcProgramId=program_id, motionCorrectionId=motion_correction_id
                )
            )
            if row is None:
                row = CTF(autoProcProgramId=program_id, motionCorrectionId=motion_correction_id)
                session.add(row)
            row.boxSizeX = row.boxSizeY = float(result.box_size)
            row.minResolution, row.maxResolution = result.min_resolution, result.max_resolution
            row.minDefocus, row.maxDefocus = result.min_defocus, result.max_defocus
            row.defocusU, row.defocusV = result.defocus_u, result.defocus_v
            row.estimatedDefocus = 0.5 * (result.defocus_u + result.defocus_v)
            row.astigmatism = abs(result.defocus_u - result.defocus_v)
            row.astigmatismAngle = result.angle_deg
            row.estimatedResolution = result.fit_resolution
            row.amplitudeContrast = result.amplitude_contrast
            row.ccValue = result.cc
            row.fftTheoreticalFullPath = result.power_spectrum_path
            session.flush()
            return row.ctfId

    @_retrying
    def em_results(self, data_collection_id: int) -> list[EMMovieResult]:
        """Every (program, movie) result of a collection, oldest program first."""
        with self._transaction(write=False) as session:
            rows = session.execute(
                select(MotionCorrection, Movie, CTF, AutoProcProgram.processingStatus)
                .join(Movie, Movie.movieId == MotionCorrection.movieId)
                .join(
                    AutoProcProgram,
                    AutoProcProgram.autoProcProgramId == MotionCorrection.autoProcProgramId,
                )
                .outerjoin(CTF, CTF.motionCorrectionId == MotionCorrection.motionCorrectionId)
                .where(MotionCorrection.dataCollectionId == data_collection_id)
                .order_by(MotionCorrection.autoProcProgramId, Movie.movieNumber)
            ).all()
            drifts: dict[int, list[tuple[float, float]]] = defaultdict(list)
            ids = [mc.motionCorrectionId for mc, *_ in rows]
            if ids:
                for mc_id, dx, dy in session.execute(
                    select(
                        MotionCorrectionDrift.motionCorrectionId,
                        MotionCorrectionDrift.deltaX,
                        MotionCorrectionDrift.deltaY,
                    )
                    .where(MotionCorrectionDrift.motionCorrectionId.in_(ids))
                    .order_by(
                        MotionCorrectionDrift.motionCorrectionId, MotionCorrectionDrift.frameNumber
                    )
                ):
                    drifts[mc_id].append((dx or 0.0, dy or 0.0))
        return [
            EMMovieResult(
                program_id=mc.autoProcProgramId or 0,
                program_status=None if status is None else bool(status),
                movie_id=movie.movieId,
                movie_number=movie.movieNumber or 0,
                movie_path=movie.movieFullPath or "",
                motion_correction_id=mc.motionCorrectionId,
                micrograph_path=mc.micrographFullPath,
                total_motion=mc.totalMotion,
                drift=drifts.get(mc.motionCorrectionId, []),
                defocus_u=ctf.defocusU if ctf else None,
                defocus_v=ctf.defocusV if ctf else None,
                astigmatism_angle=ctf.astigmatismAngle if ctf else None,
                fit_resolution=ctf.estimatedResolution if ctf else None,
                cc=ctf.ccValue if ctf else None,
            )
            for mc, movie, ctf, status in rows
        ]


# -- helpers of the writes -------------------------------------------------------------


def _upsert_session(
    session: Session, visit: str, code: str, number: str, visit_number: int, beamline: str
) -> int:
    """sessionId of the visit, creating its Proposal and BLSession when new."""
    proposal_id = session.scalar(
        select(Proposal.proposalId).filter_by(proposalCode=code, proposalNumber=number)
    )
    if proposal_id is None:
        proposal = Proposal(proposalCode=code, proposalNumber=number)
        session.add(proposal)
        session.flush()
        proposal_id = proposal.proposalId
    blsession = session.scalar(
        select(BLSession).filter_by(proposalId=proposal_id, visit_number=visit_number)
    )
    if blsession is None:
        blsession = BLSession(
            proposalId=proposal_id, visit_number=visit_number, beamLineName=beamline
        )
        session.add(blsession)
        session.flush()
    elif blsession.beamLineName is None:
        blsession.beamLineName = beamline
    elif blsession.beamLineName.casefold() != beamline.casefold():
        raise ValueError(
            f"visit {visit!r} is on beamline {blsession.beamLineName!r} in the LIMS "
            f"(BLSession {blsession.sessionId}), but the event names beamline {beamline!r}"
        )
    return blsession.sessionId


def _upsert_grid(session: Session, collection: DataCollection, grid: GridScan) -> None:
    row = session.scalar(
        select(GridInfo)
        .filter_by(dataCollectionId=collection.dataCollectionId)
        .order_by(GridInfo.gridInfoId)
        .limit(1)
    )
    if row is None:
        row = GridInfo(dataCollectionId=collection.dataCollectionId)
        session.add(row)
    row.dataCollectionGroupId = collection.dataCollectionGroupId
    row.steps_x, row.steps_y = grid.steps_x, grid.steps_y
    row.dx_mm, row.dy_mm = grid.dx_um / 1000.0, grid.dy_um / 1000.0
    row.snaked = grid.snaked
    row.orientation = "horizontal"
    row.recordTimeStamp = _now()


def _read_grid(session: Session, collection: DataCollection) -> GridScan | None:
    """The collection's GridInfo (or, as older ISPyB has it, its group's)."""
    row = session.scalar(
        select(GridInfo)
        .filter_by(dataCollectionId=collection.dataCollectionId)
        .order_by(GridInfo.gridInfoId)
        .limit(1)
    ) or session.scalar(
        select(GridInfo)
        .where(
            GridInfo.dataCollectionGroupId == collection.dataCollectionGroupId,
            GridInfo.dataCollectionId.is_(None),
        )
        .order_by(GridInfo.gridInfoId)
        .limit(1)
    )
    if row is None or None in (row.steps_x, row.steps_y, row.dx_mm, row.dy_mm):
        return None
    assert row.steps_x is not None and row.steps_y is not None
    assert row.dx_mm is not None and row.dy_mm is not None
    return GridScan(
        steps_x=round(row.steps_x),
        steps_y=round(row.steps_y),
        dx_um=round(row.dx_mm * 1000.0, 6),
        dy_um=round(row.dy_mm * 1000.0, 6),
        snaked=bool(row.snaked),
    )


def _read_grid_results(session: Session, program_ids: list[int]) -> dict[int, GridResult]:
    results: dict[int, GridResult] = {}
    for program_id, status, row in session.execute(
        select(XrayCentring.autoProcProgramId, XrayCentring.status, XrayCentringResult)
        .join(XrayCentringResult, XrayCentringResult.xrayCentringId == XrayCentring.xrayCentringId)
        .where(XrayCentring.autoProcProgramId.in_(program_ids))
        .order_by(XrayCentringResult.xrayCentringResultId)
    ):
        if program_id is None or program_id in results:
            continue
        results[program_id] = GridResult(
            x=row.centreOfMassX or 0.0,
            y=row.centreOfMassY or 0.0,
            box_min_x=row.boundingBoxMinX or 0.0,
            box_min_y=row.boundingBoxMinY or 0.0,
            box_max_x=row.boundingBoxMaxX or 0.0,
            box_max_y=row.boundingBoxMaxY or 0.0,
            max_count=row.maxCount or 0.0,
            status=status or "pending",
            max_voxel_x=row.maxVoxelX,
            max_voxel_y=row.maxVoxelY,
            n_voxels=row.numberOfVoxels,
            total_count=row.totalCount,
        )
    return results


def _lock_program(
    session: Session, program_id: int, data_collection_id: int | None = None
) -> AutoProcProgram:
    """Lock the program's row for this transaction, checking it belongs to the collection."""
    program = session.get(AutoProcProgram, program_id, with_for_update={"key_share": True})
    if program is None:
        raise ValueError(f"AutoProcProgram {program_id} does not exist; start_program first")
    if data_collection_id is not None and program.processingJobId is not None:
        owner = session.scalar(
            select(ProcessingJob.dataCollectionId).filter_by(
                processingJobId=program.processingJobId
            )
        )
        if owner is not None and owner != data_collection_id:
            raise ValueError(
                f"AutoProcProgram {program_id} processes dataCollectionId {owner}, "
                f"not {data_collection_id}"
            )
    return program


def _upsert(
    dialect: str, table: Table, conflict: tuple[str, ...], update: tuple[str, ...]
) -> Insert:
    """INSERT that updates the `update` columns where a row with the same `conflict`
    key exists."""
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update(
            {column: statement.inserted[column] for column in update}
        )
    if dialect in ("postgresql", "sqlite"):
        upsert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        return upsert.on_conflict_do_update(
            index_elements=list(conflict),
            set_={column: upsert.excluded[column] for column in update},
        )
    raise NotImplementedError(
        f"the LIMS writer supports SQLite, PostgreSQL and MariaDB/MySQL, not {dialect!r}"
    )


def _encode_parameters(parameters: Mapping[str, object]) -> dict[str, str]:
    encoded: dict[str, str] = {}
    for key, value in parameters.items():
        if key in _RESERVED_PARAMETERS:
            raise ValueError(
                f"processing parameter {key!r} is reserved by the LIMS writer "
                f"({', '.join(_RESERVED_PARAMETERS)})"
            )
        _check_length(key, PARAMETER_KEY_LENGTH, "ProcessingJobParameter.parameterKey")
        encoded[key] = _check_length(
            json.dumps(value, default=_json_default, sort_keys=True),
            PARAMETER_VALUE_LENGTH,
            f"JSON of processing parameter {key!r}",
        )
    return encoded


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


def _split_data_file(data_file: str) -> tuple[str, str]:
    """(imageDirectory ending in '/', fileTemplate) of a data file path."""
    path = PurePosixPath(data_file)
    directory = str(path.parent).rstrip("/") + "/"
    _check_length(directory, PATH_LENGTH, "DataCollection.imageDirectory")
    _check_length(path.name, PATH_LENGTH, "DataCollection.fileTemplate")
    return directory, path.name


def _prefix_and_suffix(file_template: str) -> tuple[str | None, str | None]:
    """ISPyB's imagePrefix and imageSuffix: "xtal_1_master.h5" -> ("xtal_1", "h5")."""
    stem, dot, suffix = file_template.rpartition(".")
    if not dot:
        stem, suffix = file_template, ""
    match = _TEMPLATE_STEM.match(stem)
    prefix = match.group(1) if match else stem
    return (prefix if 0 < len(prefix) <= 45 else None), (suffix if 0 < len(suffix) <= 45 else None)


def _program_status(program: AutoProcProgram | None) -> ProgramStatus:
    if program is None:
        return "queued"
    if program.processingStatus is None:
        return "running"
    return "success" if program.processingStatus else "failed"


def _check_length(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise ValueError(
            f"{what} is {len(value)} characters, ISPyB holds at most {limit}: {value[:80]!r}..."
        )
    return value


def _clip(text: str, limit: int) -> str:
    """Free text cut to fit an ISPyB column (identities are checked, never clipped)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _naive_utc(moment: datetime) -> datetime:
    """ISPyB stores naive datetimes; ours are UTC."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


# -- engines ---------------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(url: str) -> Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _make_engine(url)
        return engine


def _forget_engine(url: str, engine: Engine) -> None:
    with _ENGINES_LOCK:
        if _ENGINES.get(url) is engine:
            del _ENGINES[url]
    engine.dispose()


def _after_fork_in_child() -> None:
    """A forked child must not reuse its parent's pooled connections."""
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for writes, so
    threads and processes can share one file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_recycle=3600)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if in_memory:
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, begin transactions (see `_on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write takes the database's write lock up front: two writers never both
        # read, then both insert, and never fail upgrading a read lock mid-transaction.
        write = connection.get_execution_options().get("lims_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


# --- ptycho -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PtychoResult:
    """One ptychographic reconstruction, as the PtychographyResult row holds it."""

    algorithm: str
    iterations: int
    n_positions: int
    final_error: float | None
    object_pixel_m: float | None
    reconstruction_file: str
    processing_job_id: int | None = None


def _ptycho_result(row: PtychographyResult, processing_job_id: int | None) -> PtychoResult:
    return PtychoResult(
        algorithm=row.algorithm,
        iterations=row.iterations,
        n_positions=row.numberOfPositions,
        final_error=row.finalError,
        object_pixel_m=row.objectPixelSize,
        reconstruction_file=row.reconstructionFile or "",
        processing_job_id=processing_job_id,
    )


# --- em ---


@dataclass(frozen=True)
class MovieRecord:
    """A movie of a collection as the LIMS holds it."""

    movie_id: int
    movie_number: int
    path: str


@dataclass(frozen=True)
class MotionResult:
    """Motion correction of one movie: drift (dx, dy) per frame in pixels from frame 1,
    motion in Å, file paths of the micrograph, drift plot and power spectrum."""

    movie_number: int
    drift: list[tuple[float, float]]
    dose_per_frame: float
    dose_weighted: bool
    total_motion: float
    average_motion_per_frame: float
    micrograph_path: str
    drift_plot_path: str
    power_spectrum_path: str
    patches: tuple[int, int]


@dataclass(frozen=True)
class CTFResult:
    """A CTF fit: defocus U/V (Å), angle (degrees), fit resolution (Å), search ranges."""

    defocus_u: float
    defocus_v: float
    angle_deg: float
    fit_resolution: float
    cc: float
    amplitude_contrast: float
    box_size: int
    min_resolution: float
    max_resolution: float
    min_defocus: float
    max_defocus: float
    power_spectrum_path: str


@dataclass(frozen=True)
class EMMovieResult:
    """One movie's results from one program, as the session summary reads them."""

    program_id: int
    program_status: bool | None
    movie_id: int
    movie_number: int
    movie_path: str
    motion_correction_id: int
    micrograph_path: str | None
    total_motion: float | None
    drift: list[tuple[float, float]]
    defocus_u: float | None
    defocus_v: float | None
    astigmatism_angle: float | None
    fit_resolution: float | None
    cc: float | None
