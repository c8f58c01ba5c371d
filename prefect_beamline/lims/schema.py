"""The LIMS tables: a subset of ISPyB's schema, with ISPyB's table and column names.

Only the columns prefect-beamline reads or writes are declared, so the same code runs on
a real ISPyB database (MariaDB) and on the embedded SQLite or a PostgreSQL copy.
Unique constraints exist where idempotent writes need them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the ISPyB subset."""


class Proposal(Base):
    __tablename__ = "Proposal"
    __table_args__ = (UniqueConstraint("proposalCode", "proposalNumber"),)

    proposalId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposalCode: Mapped[str] = mapped_column(String(45))
    proposalNumber: Mapped[str] = mapped_column(String(45))


class BLSession(Base):
    __tablename__ = "BLSession"
    __table_args__ = (UniqueConstraint("proposalId", "visit_number", "beamLineName"),)

    sessionId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposalId: Mapped[int] = mapped_column(ForeignKey("Proposal.proposalId"))
    visit_number: Mapped[int] = mapped_column(Integer)
    beamLineName: Mapped[str] = mapped_column(String(45))


class DataCollectionGroup(Base):
    __tablename__ = "DataCollectionGroup"

    dataCollectionGroupId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    sessionId: Mapped[int] = mapped_column(ForeignKey("BLSession.sessionId"))
    experimentType: Mapped[str] = mapped_column(String(45))


class DataCollection(Base):
    __tablename__ = "DataCollection"

    dataCollectionId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataCollectionGroupId: Mapped[int] = mapped_column(
        ForeignKey("DataCollectionGroup.dataCollectionGroupId")
    )
    imageDirectory: Mapped[str] = mapped_column(String(255))
    fileTemplate: Mapped[str] = mapped_column(String(255))
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
        ForeignKey("DataCollection.dataCollectionId"), unique=True
    )
    steps_x: Mapped[float] = mapped_column(Float)
    steps_y: Mapped[float] = mapped_column(Float)
    dx_mm: Mapped[float] = mapped_column(Float)
    dy_mm: Mapped[float] = mapped_column(Float)
    snaked: Mapped[bool] = mapped_column(Boolean, default=False)
    orientation: Mapped[str] = mapped_column(String(15), default="horizontal")


class ProcessingJob(Base):
    __tablename__ = "ProcessingJob"

    processingJobId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionId: Mapped[int] = mapped_column(ForeignKey("DataCollection.dataCollectionId"))
    displayName: Mapped[str | None] = mapped_column(String(80))
    comments: Mapped[str | None] = mapped_column(String(255))
    recordTimestamp: Mapped[datetime] = mapped_column(DateTime)
    recipe: Mapped[str | None] = mapped_column(String(50))
    automatic: Mapped[bool] = mapped_column(Boolean)


class ProcessingJobParameter(Base):
    __tablename__ = "ProcessingJobParameter"

    processingJobParameterId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    processingJobId: Mapped[int] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), index=True
    )
    parameterKey: Mapped[str] = mapped_column(String(80))
    parameterValue: Mapped[str] = mapped_column(String(1024))


class AutoProcProgram(Base):
    __tablename__ = "AutoProcProgram"

    autoProcProgramId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    processingJobId: Mapped[int] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), unique=True
    )
    processingCommandLine: Mapped[str | None] = mapped_column(String(255))
    processingPrograms: Mapped[str | None] = mapped_column(String(255))
    # ISPyB: NULL while running, 1 success, 0 failure.
    processingStatus: Mapped[bool | None] = mapped_column(Boolean)
    processingMessage: Mapped[str | None] = mapped_column(String(255))
    processingStartTime: Mapped[datetime | None] = mapped_column(DateTime)
    processingEndTime: Mapped[datetime | None] = mapped_column(DateTime)
    processingEnvironment: Mapped[str | None] = mapped_column(String(255))
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class AutoProcProgramAttachment(Base):
    __tablename__ = "AutoProcProgramAttachment"
    __table_args__ = (UniqueConstraint("autoProcProgramId", "fileName"),)

    autoProcProgramAttachmentId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    autoProcProgramId: Mapped[int] = mapped_column(ForeignKey("AutoProcProgram.autoProcProgramId"))
    fileType: Mapped[str] = mapped_column(String(45))
    fileName: Mapped[str] = mapped_column(String(255))
    filePath: Mapped[str] = mapped_column(String(255))
    importanceRank: Mapped[int | None] = mapped_column(Integer)
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class ImageQualityIndicators(Base):
    __tablename__ = "ImageQualityIndicators"
    __table_args__ = (UniqueConstraint("autoProcProgramId", "imageNumber"),)

    imageQualityIndicatorsId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    autoProcProgramId: Mapped[int] = mapped_column(ForeignKey("AutoProcProgram.autoProcProgramId"))
    imageNumber: Mapped[int] = mapped_column(Integer)
    spotTotal: Mapped[int] = mapped_column(Integer)
    goodBraggCandidates: Mapped[int] = mapped_column(Integer)
    totalIntegratedSignal: Mapped[float] = mapped_column(Float)
    # ISPyB's per-image resolution estimate (Å); NULL when too few spots.
    method2Res: Mapped[float | None] = mapped_column(Float)
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class XrayCentring(Base):
    __tablename__ = "XrayCentring"

    xrayCentringId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionGroupId: Mapped[int] = mapped_column(
        ForeignKey("DataCollectionGroup.dataCollectionGroupId")
    )
    processingJobId: Mapped[int | None] = mapped_column(
        ForeignKey("ProcessingJob.processingJobId"), unique=True
    )
    status: Mapped[str] = mapped_column(String(45))
    xrayCentringType: Mapped[str] = mapped_column(String(45), default="2d")


class XrayCentringResult(Base):
    __tablename__ = "XrayCentringResult"

    xrayCentringResultId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    xrayCentringId: Mapped[int] = mapped_column(
        ForeignKey("XrayCentring.xrayCentringId"), unique=True
    )
    centreOfMassX: Mapped[float] = mapped_column(Float)
    centreOfMassY: Mapped[float] = mapped_column(Float)
    boundingBoxMinX: Mapped[float] = mapped_column(Float)
    boundingBoxMinY: Mapped[float] = mapped_column(Float)
    boundingBoxMaxX: Mapped[float] = mapped_column(Float)
    boundingBoxMaxY: Mapped[float] = mapped_column(Float)
    totalCount: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(45))
