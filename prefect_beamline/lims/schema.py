"""The LIMS tables: a subset of ISPyB's schema, with ISPyB's table and column names.

Taken from DiamondLightSource/ispyb-database `schemas/ispyb/tables.sql`. Only the columns
prefect-beamline reads or writes are declared, with ISPyB's types and lengths, so the
same code runs on the embedded SQLite, on PostgreSQL and on MariaDB.

Where this subset differs from ISPyB (each needed for idempotent writes):

- `AutoProcProgramAttachment` is unique on (autoProcProgramId, filePath, fileName). On
  MariaDB with utf8mb4 that index needs 2 kB of the 3 kB InnoDB (DYNAMIC row format)
  allows; ISPyB's own latin1 tables need 0.5 kB.
- `Proposal`, `BLSession` keep ISPyB's unique keys: (proposalCode, proposalNumber) and
  (proposalId, visit_number).
- `ProcessingJobTrigger` is a table of ours (ISPyB has no column for it): the DAQ event
  that started an automatic job, unique per (event, recipe), so one accepted event makes
  one job per deployment whatever Prefect forgets across a restart.

Enumerated ISPyB columns (experimentType, fileType, status) are plain strings here; the
writer checks values against the ISPyB enumerations below.

These are the core tables every technique writes under; each technique declares its
own tables on the same `Base` in `prefect_beamline.techniques.<t>.records`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# ISPyB column lengths the writer checks before it writes (it never truncates silently
# where the value is an identity, such as a path or a recipe).
PATH_LENGTH = 255
PARAMETER_KEY_LENGTH = 80
PARAMETER_VALUE_LENGTH = 1024
RECIPE_LENGTH = 50
# CollectionEvent.event_id is at most 200 characters.
EVENT_ID_LENGTH = 200
DISPLAY_NAME_LENGTH = 80
TEXT_LENGTH = 255

# AutoProcProgramAttachment.fileType enum('Log','Result','Graph','Debug','Input').
ATTACHMENT_FILE_TYPES = ("Log", "Result", "Graph", "Debug", "Input")


# ISPyB's DataCollectionGroup.experimentType enumeration (ispyb-database, up to 'Atlas').
# Each value is mapped to a technique by that technique's spec, or listed in
# ISPYB_NOT_PROCESSED with the reason; docs/zocalo.md has the table.
ISPYB_EXPERIMENT_TYPES = (
    "SAD", "SAD - Inverse Beam", "OSC", "Collect - Multiwedge", "MAD", "Helical",
    "Multi-positional", "Mesh", "Burn", "MAD - Inverse Beam", "Characterization",
    "Dehydration", "tomo", "experiment", "EM", "PDF", "PDF+Bragg", "Bragg",
    "single particle", "Serial Fixed", "Serial Jet", "Standard", "Time Resolved",
    "Diamond Anvil High Pressure", "Custom", "XRF map", "Energy scan", "XRF spectrum",
    "XRF map xas", "Mesh3D", "Screening", "Still", "SSX-Chip", "SSX-Jet", "Metal ID", "Atlas",
)  # fmt: skip
# ISPyB values no installed technique processes, and why (a technique that does takes
# them into its spec's experiment_types).
ISPYB_NOT_PROCESSED = {
    "PDF": "pair distribution function: no powder technique installed",
    "PDF+Bragg": "pair distribution function: no powder technique installed",
    "Bragg": "powder diffraction: no powder technique installed",
    "XRF map": "X-ray fluorescence: no spectroscopy technique installed",
    "XRF spectrum": "X-ray fluorescence: no spectroscopy technique installed",
    "XRF map xas": "X-ray absorption: no spectroscopy technique installed",
    "Energy scan": "absorption-edge scan: no spectroscopy technique installed",
    "experiment": "generic experiment: nothing says which technique it is",
    "Custom": "non-standard collection: nothing says which technique it is",
    "Atlas": "cryo-EM grid atlas (overview images): nothing to process",
}


def ispyb_experiment_type(technique: str, experiment_type: str) -> str:
    """ISPyB's DataCollectionGroup.experimentType for an event's technique and variant.

    Each technique's spec holds its mapping (`TechniqueSpec.experiment_types`); the
    first ISPyB value listed for an experiment_type is the one written.
    """
    from prefect_beamline.techniques import registry

    spec = registry().get(technique)
    for ispyb, experiment in spec.experiment_types if spec else ():
        if experiment == experiment_type:
            return ispyb
    known = ", ".join(f"{t}/{e}" for t, e in _from_ispyb().values())
    raise ValueError(
        f"no ISPyB experimentType for technique {technique!r} with experiment_type "
        f"{experiment_type!r}; mapped: {known} (a technique's spec lists its experiment_types)"
    )


def technique_for_experiment_type(ispyb_type: str | None) -> tuple[str, str]:
    """(technique, experiment_type) for an ISPyB DataCollectionGroup.experimentType."""
    mapping = _from_ispyb()
    try:
        return mapping[ispyb_type or ""]
    except KeyError:
        why = ISPYB_NOT_PROCESSED.get(ispyb_type or "")
        raise ValueError(
            f"DataCollectionGroup.experimentType {ispyb_type!r} is not mapped to a "
            f"technique{f' ({why})' if why else ''}; mapped: {', '.join(mapping)} "
            "(a technique's spec lists its experiment_types)"
        ) from None


def _from_ispyb() -> dict[str, tuple[str, str]]:
    from prefect_beamline.techniques import registry

    return {
        ispyb: (spec.name, experiment)
        for spec in registry().values()
        for ispyb, experiment in spec.experiment_types
    }


class Base(DeclarativeBase):
    """Declarative base of the ISPyB subset."""


class Proposal(Base):
    __tablename__ = "Proposal"
    __table_args__ = (
        UniqueConstraint("proposalCode", "proposalNumber", name="Proposal_FKIndexCodeNumber"),
    )

    proposalId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposalCode: Mapped[str] = mapped_column(String(45))
    proposalNumber: Mapped[str] = mapped_column(String(45))


class BLSession(Base):
    __tablename__ = "BLSession"
    __table_args__ = (
        UniqueConstraint("proposalId", "visit_number", name="BLSession_proposalId_visit"),
    )

    sessionId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposalId: Mapped[int] = mapped_column(ForeignKey("Proposal.proposalId"))
    visit_number: Mapped[int] = mapped_column(Integer, default=0)
    beamLineName: Mapped[str | None] = mapped_column(String(45))


class DataCollectionGroup(Base):
    __tablename__ = "DataCollectionGroup"

    dataCollectionGroupId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    sessionId: Mapped[int] = mapped_column(ForeignKey("BLSession.sessionId"), index=True)
    experimentType: Mapped[str | None] = mapped_column(String(45))


class DataCollection(Base):
    __tablename__ = "DataCollection"

    # The DAQ allocates the id (as GDA does through ISPyB); we never autoincrement it.
    dataCollectionId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataCollectionGroupId: Mapped[int] = mapped_column(
        ForeignKey("DataCollectionGroup.dataCollectionGroupId"), index=True
    )
    # ISPyB: "The directory where files reside - should end with a slash".
    imageDirectory: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    imagePrefix: Mapped[str | None] = mapped_column(String(45))
    imageSuffix: Mapped[str | None] = mapped_column(String(45))
    fileTemplate: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    numberOfImages: Mapped[int | None] = mapped_column(Integer)
    startImageNumber: Mapped[int | None] = mapped_column(Integer)
    startTime: Mapped[datetime | None] = mapped_column(DateTime)
    endTime: Mapped[datetime | None] = mapped_column(DateTime)
    runStatus: Mapped[str | None] = mapped_column(String(45))


class GridInfo(Base):
    __tablename__ = "GridInfo"

    gridInfoId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionGroupId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollectionGroup.dataCollectionGroupId")
    )
    dataCollectionId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    steps_x: Mapped[float | None] = mapped_column(Double)
    steps_y: Mapped[float | None] = mapped_column(Double)
    dx_mm: Mapped[float | None] = mapped_column(Double)
    dy_mm: Mapped[float | None] = mapped_column(Double)
    snaked: Mapped[bool | None] = mapped_column(Boolean, default=False)
    # enum('vertical','horizontal'): horizontal = rows run along x, as GridScan says.
    orientation: Mapped[str | None] = mapped_column(String(10), default="horizontal")
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class ProcessingJob(Base):
    __tablename__ = "ProcessingJob"

    processingJobId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    displayName: Mapped[str | None] = mapped_column(String(DISPLAY_NAME_LENGTH))
    comments: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    recordTimestamp: Mapped[datetime] = mapped_column(DateTime)
    recipe: Mapped[str | None] = mapped_column(String(RECIPE_LENGTH))
    automatic: Mapped[bool | None] = mapped_column(Boolean)


class ProcessingJobTrigger(Base):
    """The accepted DAQ event an automatic ProcessingJob was started for (ours, not ISPyB's).

    Written in the job's own transaction; the unique key makes a second run started for
    the same event and recipe (a requeue after a server restart, two automations racing)
    find the first job instead of making another.
    """

    __tablename__ = "ProcessingJobTrigger"
    __table_args__ = (
        UniqueConstraint("eventId", "recipe", name="ProcessingJobTrigger_event_recipe"),
    )

    processingJobTriggerId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    processingJobId: Mapped[int] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), unique=True
    )
    eventId: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    recipe: Mapped[str] = mapped_column(String(RECIPE_LENGTH))
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class ProcessingJobParameter(Base):
    __tablename__ = "ProcessingJobParameter"
    __table_args__ = (
        Index("ProcessingJobParameter_idx_paramKey_procJobId", "parameterKey", "processingJobId"),
    )

    processingJobParameterId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    processingJobId: Mapped[int | None] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), index=True
    )
    parameterKey: Mapped[str | None] = mapped_column(String(PARAMETER_KEY_LENGTH))
    parameterValue: Mapped[str | None] = mapped_column(String(PARAMETER_VALUE_LENGTH))


class AutoProcProgram(Base):
    __tablename__ = "AutoProcProgram"

    autoProcProgramId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    processingJobId: Mapped[int | None] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), index=True
    )
    processingCommandLine: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    processingPrograms: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    # ISPyB: NULL while running, 1 success, 0 failure.
    processingStatus: Mapped[bool | None] = mapped_column(Boolean)
    processingMessage: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    processingStartTime: Mapped[datetime | None] = mapped_column(DateTime)
    processingEndTime: Mapped[datetime | None] = mapped_column(DateTime)
    processingEnvironment: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class AutoProcProgramAttachment(Base):
    __tablename__ = "AutoProcProgramAttachment"
    __table_args__ = (
        UniqueConstraint(
            "autoProcProgramId",
            "filePath",
            "fileName",
            name="AutoProcProgramAttachment_program_file",
        ),
    )

    autoProcProgramAttachmentId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    autoProcProgramId: Mapped[int] = mapped_column(ForeignKey("AutoProcProgram.autoProcProgramId"))
    fileType: Mapped[str | None] = mapped_column(String(10))
    fileName: Mapped[str] = mapped_column(String(PATH_LENGTH))
    filePath: Mapped[str] = mapped_column(String(PATH_LENGTH))
    importanceRank: Mapped[int | None] = mapped_column(Integer)
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)
