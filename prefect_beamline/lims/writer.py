"""The one writer of LIMS rows: idempotent, short transactions, any SQLAlchemy database.

Every method is safe to repeat: a retried Prefect task calls it again with the same
arguments and finds its rows already there. A rerun is a new flow run, so a new
`run_key`, so a new ProcessingJob.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prefect_beamline.events import CollectionEvent, GridScan, Technique
from prefect_beamline.lims.schema import (
    AutoProcProgram,
    AutoProcProgramAttachment,
    Base,
    BLSession,
    DataCollection,
    DataCollectionGroup,
    GridInfo,
    ImageQualityIndicators,
    ProcessingJob,
    ProcessingJobParameter,
    Proposal,
    XrayCentring,
    XrayCentringResult,
)

# (technique, experiment_type) <-> ISPyB DataCollectionGroup.experimentType: the one place.
EXPERIMENT_TYPES: dict[tuple[Technique, str], str] = {
    (Technique.mx, "rotation"): "OSC",
    (Technique.mx, "gridscan"): "Mesh",
    (Technique.ssx, "fixed"): "Serial Fixed",
    (Technique.ssx, "jet"): "Serial Jet",
    (Technique.tomo, "default"): "Tomo",
    (Technique.em, "default"): "EM",
    (Technique.ptycho, "default"): "Ptychography",
}
_ISPYB_TO_EVENT = {ispyb: key for key, ispyb in EXPERIMENT_TYPES.items()}
RUN_KEY = "prefect_flow_run_id"
TRIGGERED_BY = "triggered_by"
_VISIT = re.compile(r"^([A-Za-z]+)(\d+)-(\d+)$")
_TRANSIENT_ATTEMPTS = 5

P = ParamSpec("P")
R = TypeVar("R")


def ispyb_experiment_type(technique: Technique, experiment_type: str) -> str:
    """ISPyB's experimentType for an event's technique and experiment type."""
    try:
        return EXPERIMENT_TYPES[(technique, experiment_type)]
    except KeyError:
        known = ", ".join(f"{t.value}/{e}" for t, e in EXPERIMENT_TYPES)
        raise ValueError(
            f"no ISPyB experimentType for technique {technique.value!r} with experiment_type "
            f"{experiment_type!r}; known: {known}"
        ) from None


def event_experiment_type(ispyb_type: str) -> tuple[Technique, str]:
    """(technique, experiment_type) for an ISPyB experimentType."""
    try:
        return _ISPYB_TO_EVENT[ispyb_type]
    except KeyError:
        raise ValueError(
            f"DataCollectionGroup.experimentType {ispyb_type!r} is not mapped to a technique; "
            f"known: {', '.join(sorted(_ISPYB_TO_EVENT))}"
        ) from None


def split_visit(visit: str) -> tuple[str, str, int]:
    """ISPyB visit "mx12345-1" -> ("mx", "12345", 1).

    A visit that does not follow ISPyB's pattern is kept whole as the proposal code with
    visit number 0, so facilities with other conventions still round-trip.
    """
    match = _VISIT.match(visit)
    if match is None:
        return visit, "", 0
    return match.group(1), match.group(2), int(match.group(3))


def join_visit(code: str, number: str, visit_number: int) -> str:
    return f"{code}{number}-{visit_number}" if number else code


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def retry_transient(method: Callable[P, R]) -> Callable[P, R]:
    """Retry a whole transaction on lock timeouts, deadlocks and unique-key races."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(_TRANSIENT_ATTEMPTS):
            try:
                return method(*args, **kwargs)
            except (OperationalError, IntegrityError) as error:
                transient = isinstance(error, IntegrityError) or any(
                    word in str(error).lower() for word in ("locked", "deadlock", "lock wait")
                )
                if not transient or attempt == _TRANSIENT_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper


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
class ImageQuality:
    """One ImageQualityIndicators row."""

    image_number: int
    n_spots: int
    total_intensity: float
    d_min_angstrom: float | None


@dataclass(frozen=True)
class GridResult:
    """X-ray centre of a grid scan, in grid steps (0-based)."""

    x: float
    y: float
    box_min_x: float
    box_min_y: float
    box_max_x: float
    box_max_y: float
    max_count: float
    status: str


@dataclass(frozen=True)
class ProcessingJobSummary:
    """One job of a collection as the CLI, demo and tests report it."""

    processing_job_id: int
    recipe: str | None
    automatic: bool
    triggered_by: str | None
    parameters: dict[str, Any]
    program_id: int | None
    program_status: str | None
    program_message: str | None
    attachments: list[str] = field(default_factory=list)
    n_image_quality_rows: int = 0
    grid_result: dict[str, float] | None = None

    @property
    def results_dir(self) -> str | None:
        return str(Path(self.attachments[0]).parent) if self.attachments else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "results_dir": self.results_dir}


def _status_name(status: bool | None) -> str:
    return "running" if status is None else ("success" if status else "failed")


class Lims:
    """Reads and idempotent writes of the ISPyB subset.

    Example:
        >>> lims = Lims("sqlite:///lims.db")
        >>> lims.create_schema()
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls) -> Lims:
        from prefect_beamline.settings import get_settings

        return cls(get_settings().resolved_lims_url)

    def session(self) -> Session:
        return self._sessions()

    @retry_transient
    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)

    @retry_transient
    def record_data_collection(self, event: CollectionEvent) -> int:
        """Upsert the collection (with its proposal, session, group and grid) as announced."""
        experiment = ispyb_experiment_type(event.technique, event.experiment_type)
        code, number, visit_number = split_visit(event.visit)
        master = Path(event.data_files[0])
        with self.session() as session, session.begin():
            proposal = session.scalar(
                select(Proposal).filter_by(proposalCode=code, proposalNumber=number)
            )
            if proposal is None:
                proposal = Proposal(proposalCode=code, proposalNumber=number)
                session.add(proposal)
                session.flush()
            blsession = session.scalar(
                select(BLSession).filter_by(
                    proposalId=proposal.proposalId,
                    visit_number=visit_number,
                    beamLineName=event.beamline,
                )
            )
            if blsession is None:
                blsession = BLSession(
                    proposalId=proposal.proposalId,
                    visit_number=visit_number,
                    beamLineName=event.beamline,
                )
                session.add(blsession)
                session.flush()
            collection = session.get(DataCollection, event.collection_id)
            if collection is None:
                group = DataCollectionGroup(
                    sessionId=blsession.sessionId, experimentType=experiment
                )
                session.add(group)
                session.flush()
                collection = DataCollection(
                    dataCollectionId=event.collection_id,
                    dataCollectionGroupId=group.dataCollectionGroupId,
                    startTime=event.timestamp.replace(tzinfo=None),
                )
                session.add(collection)
            else:
                group = session.get_one(DataCollectionGroup, collection.dataCollectionGroupId)
                group.sessionId = blsession.sessionId
                group.experimentType = experiment
            collection.imageDirectory = str(master.parent) + "/"
            collection.fileTemplate = master.name
            if event.image_range is not None:
                collection.startImageNumber = event.image_range[0]
                collection.numberOfImages = event.image_range[1] - event.image_range[0] + 1
            if event.kind.value == "finished":
                collection.endTime = event.timestamp.replace(tzinfo=None)
                collection.runStatus = "DataCollection Successful"
            session.flush()
            if event.grid is not None:
                self._upsert_grid(session, collection, event.grid)
        return event.collection_id

    @staticmethod
    def _upsert_grid(session: Session, collection: DataCollection, grid: GridScan) -> None:
        row = session.scalar(
            select(GridInfo).filter_by(dataCollectionId=collection.dataCollectionId)
        )
        if row is None:
            row = GridInfo(
                dataCollectionId=collection.dataCollectionId,
                dataCollectionGroupId=collection.dataCollectionGroupId,
            )
            session.add(row)
        row.steps_x, row.steps_y = grid.steps_x, grid.steps_y
        row.dx_mm, row.dy_mm = grid.dx_um / 1000.0, grid.dy_um / 1000.0
        row.snaked = grid.snaked
        row.orientation = "horizontal"

    def get_collection(self, data_collection_id: int) -> CollectionDescription | None:
        """The collection as the flows need it, or None when the id is unknown."""
        with self.session() as session:
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
            grid_row = session.scalar(
                select(GridInfo).filter_by(dataCollectionId=data_collection_id)
            )
        technique, experiment_type = event_experiment_type(group.experimentType)
        image_range = None
        if collection.startImageNumber is not None and collection.numberOfImages:
            image_range = (
                collection.startImageNumber,
                collection.startImageNumber + collection.numberOfImages - 1,
            )
        grid = None
        if grid_row is not None:
            grid = GridScan(
                steps_x=int(grid_row.steps_x),
                steps_y=int(grid_row.steps_y),
                dx_um=grid_row.dx_mm * 1000.0,
                dy_um=grid_row.dy_mm * 1000.0,
                snaked=bool(grid_row.snaked),
            )
        return CollectionDescription(
            collection_id=collection.dataCollectionId,
            beamline=blsession.beamLineName,
            visit=join_visit(proposal.proposalCode, proposal.proposalNumber, blsession.visit_number),
            technique=technique,
            experiment_type=experiment_type,
            data_files=[collection.imageDirectory.rstrip("/") + "/" + collection.fileTemplate],
            image_range=image_range,
            grid=grid,
        )

    @retry_transient
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
        """The ProcessingJob of one flow run (created once per `run_key`)."""
        with self.session() as session, session.begin():
            existing = session.scalar(
                select(ProcessingJobParameter.processingJobId).filter_by(
                    parameterKey=RUN_KEY, parameterValue=run_key
                )
            )
            if existing is not None:
                return int(existing)
            job = ProcessingJob(
                dataCollectionId=data_collection_id,
                displayName=display_name[:80],
                comments=f"triggered by {triggered_by}"[:255],
                recordTimestamp=_now(),
                recipe=recipe[:50],
                automatic=automatic,
            )
            session.add(job)
            session.flush()
            values = {**{k: json.dumps(v, default=str) for k, v in parameters.items()}}
            values[RUN_KEY] = run_key
            values[TRIGGERED_BY] = triggered_by
            session.add_all(
                ProcessingJobParameter(
                    processingJobId=job.processingJobId, parameterKey=key, parameterValue=value
                )
                for key, value in values.items()
            )
            return job.processingJobId

    @retry_transient
    def start_program(
        self, *, processing_job_id: int, programs: str, command_line: str, environment: str
    ) -> int:
        """The job's AutoProcProgram, running (one per job)."""
        with self.session() as session, session.begin():
            program = session.scalar(
                select(AutoProcProgram).filter_by(processingJobId=processing_job_id)
            )
            if program is None:
                program = AutoProcProgram(
                    processingJobId=processing_job_id,
                    processingStartTime=_now(),
                    recordTimeStamp=_now(),
                )
                session.add(program)
            program.processingPrograms = programs[:255]
            program.processingCommandLine = command_line[:255]
            program.processingEnvironment = environment[:255]
            session.flush()
            return program.autoProcProgramId

    @retry_transient
    def finish_program(self, program_id: int, *, success: bool, message: str) -> None:
        with self.session() as session, session.begin():
            program = session.get(AutoProcProgram, program_id)
            if program is None:
                raise ValueError(f"AutoProcProgram {program_id} does not exist")
            program.processingStatus = success
            program.processingMessage = message[:255]
            program.processingEndTime = _now()

    @retry_transient
    def add_attachment(
        self, program_id: int, path: Path, file_type: str, importance_rank: int | None = None
    ) -> int:
        """Register a result file once per (program, file name)."""
        path = Path(path)
        with self.session() as session, session.begin():
            row = session.scalar(
                select(AutoProcProgramAttachment).filter_by(
                    autoProcProgramId=program_id, fileName=path.name
                )
            )
            if row is None:
                row = AutoProcProgramAttachment(
                    autoProcProgramId=program_id, fileName=path.name, recordTimeStamp=_now()
                )
                session.add(row)
            row.filePath = str(path.parent)
            row.fileType = file_type
            row.importanceRank = importance_rank
            session.flush()
            return row.autoProcProgramAttachmentId

    @retry_transient
    def record_image_quality(
        self, program_id: int, data_collection_id: int, rows: Sequence[ImageQuality]
    ) -> None:
        """One row per image of this program: inserted once, updated when rewritten."""
        with self.session() as session, session.begin():
            existing = {
                r.imageNumber: r
                for r in session.scalars(
                    select(ImageQualityIndicators).filter_by(autoProcProgramId=program_id)
                )
            }
            for quality in rows:
                row = existing.get(quality.image_number)
                if row is None:
                    row = ImageQualityIndicators(
                        autoProcProgramId=program_id,
                        dataCollectionId=data_collection_id,
                        imageNumber=quality.image_number,
                    )
                    session.add(row)
                row.spotTotal = quality.n_spots
                row.goodBraggCandidates = quality.n_spots
                row.totalIntegratedSignal = quality.total_intensity
                row.method2Res = quality.d_min_angstrom
                row.recordTimeStamp = _now()

    @retry_transient
    def record_grid_result(
        self, program_id: int, data_collection_id: int, result: GridResult
    ) -> int:
        """The X-ray centring of a grid-scan job (one per job)."""
        with self.session() as session, session.begin():
            program = session.get_one(AutoProcProgram, program_id)
            collection = session.get_one(DataCollection, data_collection_id)
            centring = session.scalar(
                select(XrayCentring).filter_by(processingJobId=program.processingJobId)
            )
            if centring is None:
                centring = XrayCentring(
                    dataCollectionGroupId=collection.dataCollectionGroupId,
                    processingJobId=program.processingJobId,
                    xrayCentringType="2d",
                )
                session.add(centring)
            centring.status = result.status
            session.flush()
            row = session.scalar(
                select(XrayCentringResult).filter_by(xrayCentringId=centring.xrayCentringId)
            )
            if row is None:
                row = XrayCentringResult(xrayCentringId=centring.xrayCentringId)
                session.add(row)
            row.centreOfMassX, row.centreOfMassY = result.x, result.y
            row.boundingBoxMinX, row.boundingBoxMinY = result.box_min_x, result.box_min_y
            row.boundingBoxMaxX, row.boundingBoxMaxY = result.box_max_x, result.box_max_y
            row.totalCount = result.max_count
            row.status = result.status
            session.flush()
            return row.xrayCentringResultId

    def jobs_for_collection(self, data_collection_id: int) -> list[ProcessingJobSummary]:
        """Every job of a collection, oldest first, with its program and results."""
        summaries = []
        with self.session() as session:
            jobs = session.scalars(
                select(ProcessingJob)
                .filter_by(dataCollectionId=data_collection_id)
                .order_by(ProcessingJob.processingJobId)
            ).all()
            for job in jobs:
                parameters = {
                    p.parameterKey: p.parameterValue
                    for p in session.scalars(
                        select(ProcessingJobParameter).filter_by(
                            processingJobId=job.processingJobId
                        )
                    )
                }
                triggered_by = parameters.pop(TRIGGERED_BY, None)
                parameters.pop(RUN_KEY, None)
                program = session.scalar(
                    select(AutoProcProgram).filter_by(processingJobId=job.processingJobId)
                )
                attachments: list[str] = []
                n_quality = 0
                grid_result = None
                if program is not None:
                    attachments = [
                        f"{a.filePath}/{a.fileName}"
                        for a in session.scalars(
                            select(AutoProcProgramAttachment)
                            .filter_by(autoProcProgramId=program.autoProcProgramId)
                            .order_by(AutoProcProgramAttachment.importanceRank)
                        )
                    ]
                    n_quality = int(
                        session.scalar(
                            select(func.count()).where(
                                ImageQualityIndicators.autoProcProgramId
                                == program.autoProcProgramId
                            )
                        )
                        or 0
                    )
                    grid_result = self._grid_result(session, job.processingJobId)
                summaries.append(
                    ProcessingJobSummary(
                        processing_job_id=job.processingJobId,
                        recipe=job.recipe,
                        automatic=bool(job.automatic),
                        triggered_by=triggered_by,
                        parameters={k: _decode(v) for k, v in parameters.items()},
                        program_id=program.autoProcProgramId if program else None,
                        program_status=_status_name(program.processingStatus) if program else None,
                        program_message=program.processingMessage if program else None,
                        attachments=attachments,
                        n_image_quality_rows=n_quality,
                        grid_result=grid_result,
                    )
                )
        return summaries

    @staticmethod
    def _grid_result(session: Session, processing_job_id: int) -> dict[str, float] | None:
        row = session.execute(
            select(XrayCentringResult)
            .join(XrayCentring, XrayCentring.xrayCentringId == XrayCentringResult.xrayCentringId)
            .where(XrayCentring.processingJobId == processing_job_id)
        ).scalar()
        if row is None:
            return None
        return {
            "x": row.centreOfMassX,
            "y": row.centreOfMassY,
            "box_min_x": row.boundingBoxMinX,
            "box_min_y": row.boundingBoxMinY,
            "box_max_x": row.boundingBoxMaxX,
            "box_max_y": row.boundingBoxMaxY,
            "max_count": row.totalCount,
        }

    def image_quality(self, program_id: int) -> list[ImageQuality]:
        """The ImageQualityIndicators rows of one program, by image number."""
        with self.session() as session:
            rows = session.scalars(
                select(ImageQualityIndicators)
                .filter_by(autoProcProgramId=program_id)
                .order_by(ImageQualityIndicators.imageNumber)
            ).all()
        return [
            ImageQuality(r.imageNumber, r.spotTotal, r.totalIntegratedSignal, r.method2Res)
            for r in rows
        ]


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL and a busy timeout so threads and processes share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
