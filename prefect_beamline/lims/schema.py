"""The LIMS tables: a subset of ISPyB's schema, with ISPyB's table and column names.

Taken from DiamondLightSource/ispyb-database `schemas/ispyb/tables.sql`. Only the columns
prefect-beamline reads or writes are declared, with ISPyB's types and lengths, so the
same code runs on the embedded SQLite, on PostgreSQL and on MariaDB.

Where this subset differs from ISPyB (each needed for idempotent writes):

- `ImageQualityIndicators` keeps the surrogate key `imageQualityIndicatorsId` of older
  ISPyB versions and is unique on (autoProcProgramId, imageNumber). Current ISPyB keys it
  on (dataCollectionId, imageNumber), so a rerun would overwrite the first run's rows;
  here every processing job keeps its own per-image rows.
- `XrayCentring.autoProcProgramId` (unique) ties a grid-scan result to the program that
  found it; ISPyB ties it only to the DataCollectionGroup, which reruns share.
- `XrayCentringResult.maxCount`: the best per-image count, which ISPyB has no column for.
- `AutoProcProgramAttachment` is unique on (autoProcProgramId, filePath, fileName). On
  MariaDB with utf8mb4 that index needs 2 kB of the 3 kB InnoDB (DYNAMIC row format)
  allows; ISPyB's own latin1 tables need 0.5 kB.
- `Proposal`, `BLSession` keep ISPyB's unique keys: (proposalCode, proposalNumber) and
  (proposalId, visit_number).

Enumerated ISPyB columns (experimentType, fileType, status) are plain strings here; the
writer checks values against the ISPyB enumerations below.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from prefect_beamline.events import Technique

# ISPyB column lengths the writer checks before it writes (it never truncates silently
# where the value is an identity, such as a path or a recipe).
PATH_LENGTH = 255
PARAMETER_KEY_LENGTH = 80
PARAMETER_VALUE_LENGTH = 1024
RECIPE_LENGTH = 50
DISPLAY_NAME_LENGTH = 80
TEXT_LENGTH = 255

# AutoProcProgramAttachment.fileType enum('Log','Result','Graph','Debug','Input').
ATTACHMENT_FILE_TYPES = ("Log", "Result", "Graph", "Debug", "Input")
# XrayCentring.status enum('success','failed','pending').
XRAY_CENTRING_STATUSES = ("success", "failed", "pending")

# ISPyB's DataCollectionGroup.experimentType <-> (technique, experiment_type) of a
# CollectionEvent: the one place this mapping lives. The first entry for a pair is what
# the writer stores; the others are accepted when reading a database another program
# wrote. ISPyB spells tomography 'tomo'. ISPyB has no experimentType for ptychography:
# 'Ptychography' is this project's own value (extend the enum on a real ISPyB).
EXPERIMENT_TYPES: tuple[tuple[str, Technique, str], ...] = (
    ("OSC", Technique.mx, "rotation"),
    ("Mesh", Technique.mx, "gridscan"),
    ("Serial Fixed", Technique.ssx, "fixed"),
    ("SSX-Chip", Technique.ssx, "fixed"),
    ("Serial Jet", Technique.ssx, "jet"),
    ("SSX-Jet", Technique.ssx, "jet"),
    ("tomo", Technique.tomo, "default"),
    ("Tomo", Technique.tomo, "default"),
    ("EM", Technique.em, "default"),
    ("Ptychography", Technique.ptycho, "default"),
)
_TO_ISPYB: dict[tuple[Technique, str], str] = {}
for _ispyb, _technique, _experiment in EXPERIMENT_TYPES:
    _TO_ISPYB.setdefault((_technique, _experiment), _ispyb)
_FROM_ISPYB: dict[str, tuple[Technique, str]] = {
    ispyb: (technique, experiment) for ispyb, technique, experiment in EXPERIMENT_TYPES
}


def ispyb_experiment_type(technique: Technique, experiment_type: str) -> str:
    """ISPyB's DataCollectionGroup.experimentType for an event's technique and variant."""
    try:
        return _TO_ISPYB[(Technique(technique), experiment_type)]
    except KeyError:
        known = ", ".join(f"{t.value}/{e}" for t, e in _TO_ISPYB)
        raise ValueError(
            f"no ISPyB experimentType for technique {Technique(technique).value!r} with "
            f"experiment_type {experiment_type!r}; mapped: {known} "
            "(add it to prefect_beamline.lims.schema.EXPERIMENT_TYPES)"
        ) from None


def technique_for_experiment_type(ispyb_type: str | None) -> tuple[Technique, str]:
    """(technique, experiment_type) for an ISPyB DataCollectionGroup.experimentType."""
    try:
        return _FROM_ISPYB[ispyb_type or ""]
    except KeyError:
        raise ValueError(
            f"DataCollectionGroup.experimentType {ispyb_type!r} is not mapped to a "
            f"technique; mapped: {', '.join(_FROM_ISPYB)} "
            "(add it to prefect_beamline.lims.schema.EXPERIMENT_TYPES)"
        ) from None


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


class ImageQualityIndicators(Base):
    __tablename__ = "ImageQualityIndicators"
    __table_args__ = (
        UniqueConstraint(
            "autoProcProgramId", "imageNumber", name="ImageQualityIndicators_program_image"
        ),
    )

    imageQualityIndicatorsId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    imageNumber: Mapped[int] = mapped_column(Integer)
    autoProcProgramId: Mapped[int] = mapped_column(ForeignKey("AutoProcProgram.autoProcProgramId"))
    # As Zocalo's per-image analysis fills them from DIALS: n_spots_total,
    # n_spots_no_ice, estimated_d_min (Å) and total_intensity.
    spotTotal: Mapped[int | None] = mapped_column(Integer)
    goodBraggCandidates: Mapped[int | None] = mapped_column(Integer)
    method1Res: Mapped[float | None] = mapped_column(Float)
    method2Res: Mapped[float | None] = mapped_column(Float)
    totalIntegratedSignal: Mapped[float | None] = mapped_column(Double)
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class XrayCentring(Base):
    __tablename__ = "XrayCentring"

    xrayCentringId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionGroupId: Mapped[int] = mapped_column(
        ForeignKey("DataCollectionGroup.dataCollectionGroupId"), index=True
    )
    status: Mapped[str | None] = mapped_column(String(10))
    # enum('2d','3d')
    xrayCentringType: Mapped[str | None] = mapped_column(String(2))
    # Not in ISPyB (see the module docstring).
    autoProcProgramId: Mapped[int | None] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), unique=True
    )


class XrayCentringResult(Base):
    __tablename__ = "XrayCentringResult"

    xrayCentringResultId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    xrayCentringId: Mapped[int] = mapped_column(
        ForeignKey("XrayCentring.xrayCentringId"), index=True
    )
    # ISPyB's "voxels" are grid steps here (0-based, x fast, y slow).
    centreOfMassX: Mapped[float | None] = mapped_column(Float)
    centreOfMassY: Mapped[float | None] = mapped_column(Float)
    maxVoxelX: Mapped[int | None] = mapped_column(Integer)
    maxVoxelY: Mapped[int | None] = mapped_column(Integer)
    numberOfVoxels: Mapped[int | None] = mapped_column(Integer)
    totalCount: Mapped[float | None] = mapped_column(Float)
    boundingBoxMinX: Mapped[float | None] = mapped_column(Float)
    boundingBoxMaxX: Mapped[float | None] = mapped_column(Float)
    boundingBoxMinY: Mapped[float | None] = mapped_column(Float)
    boundingBoxMaxY: Mapped[float | None] = mapped_column(Float)
    # Not in ISPyB (see the module docstring).
    maxCount: Mapped[float | None] = mapped_column(Float)


# --- tomography ---


class Tomogram(Base):
    """A reconstructed volume (ISPyB's cryo-ET table, used here for X-ray tomography).

    Differs from ISPyB: `autoProcProgramId` is unique (one volume per program, so a
    retried task updates its row), and `centreOfRotation` (detector column of the
    rotation axis, pixels) with `centreOfRotationMethod` ("user", "0/180 pair",
    "sinogram metric") and `projYZ` are this project's own columns. The previews are
    planes through the volume's centre, not projections: `centralSliceImage` the xy
    slice, `projXZ` and `projYZ` the vertical planes. `pixelSpacing` is in Å per pixel,
    as in ISPyB.
    """

    __tablename__ = "Tomogram"

    tomogramId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    autoProcProgramId: Mapped[int | None] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), unique=True
    )
    volumeFile: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    sizeX: Mapped[int | None] = mapped_column(Integer)
    sizeY: Mapped[int | None] = mapped_column(Integer)
    sizeZ: Mapped[int | None] = mapped_column(Integer)
    pixelSpacing: Mapped[float | None] = mapped_column(Float)
    fileDirectory: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    centralSliceImage: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    projXZ: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)
    # Not in ISPyB (see the class docstring).
    projYZ: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    centreOfRotation: Mapped[float | None] = mapped_column(Double)
    centreOfRotationMethod: Mapped[str | None] = mapped_column(String(20))


# --- ptycho ---


class PtychographyResult(Base):
    """Not in ISPyB (which has no ptychography table): one row per program that
    reconstructed a ptychography scan. The object/probe HDF5 and the phase/amplitude PNGs
    are the program's AutoProcProgramAttachments; this row holds what a scientist sorts
    and compares runs by, and where the reconstruction file is (for `probe_from`)."""

    __tablename__ = "PtychographyResult"

    ptychographyResultId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    autoProcProgramId: Mapped[int] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), unique=True
    )
    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    algorithm: Mapped[str] = mapped_column(String(10))
    iterations: Mapped[int] = mapped_column(Integer)
    numberOfPositions: Mapped[int] = mapped_column(Integer)
    finalError: Mapped[float | None] = mapped_column(Double)
    objectPixelSize: Mapped[float | None] = mapped_column(Double)  # metres
    reconstructionFile: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    recordTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


# --- em ---
# ISPyB's cryo-EM tables (Movie, MotionCorrection, MotionCorrectionDrift, CTF), with the
# columns the per-movie flow writes. Differences, each for idempotent writes:
# `Movie` is unique on (dataCollectionId, movieFullPath); `MotionCorrection` on
# (autoProcProgramId, movieId); `MotionCorrectionDrift` on (motionCorrectionId,
# frameNumber); `CTF` on (autoProcProgramId, motionCorrectionId). CTF.defocusU/defocusV
# are not in ISPyB (it keeps estimatedDefocus, the mean, and astigmatism); kept here so
# the fit reads back whole.


class Movie(Base):
    __tablename__ = "Movie"
    __table_args__ = (
        UniqueConstraint("dataCollectionId", "movieFullPath", name="Movie_dataCollection_path"),
    )

    movieId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    movieNumber: Mapped[int | None] = mapped_column(Integer)
    movieFullPath: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    numberOfFrames: Mapped[int | None] = mapped_column(Integer)
    fluence: Mapped[float | None] = mapped_column(Float)
    createdTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)


class MotionCorrection(Base):
    __tablename__ = "MotionCorrection"
    __table_args__ = (
        UniqueConstraint("autoProcProgramId", "movieId", name="MotionCorrection_program_movie"),
    )

    motionCorrectionId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataCollectionId: Mapped[int | None] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    autoProcProgramId: Mapped[int | None] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), index=True
    )
    movieId: Mapped[int | None] = mapped_column(ForeignKey("Movie.movieId"), index=True)
    imageNumber: Mapped[int | None] = mapped_column(Integer)
    firstFrame: Mapped[int | None] = mapped_column(Integer)
    lastFrame: Mapped[int | None] = mapped_column(Integer)
    dosePerFrame: Mapped[float | None] = mapped_column(Float)
    doseWeight: Mapped[float | None] = mapped_column(Float)
    totalMotion: Mapped[float | None] = mapped_column(Float)
    averageMotionPerFrame: Mapped[float | None] = mapped_column(Float)
    driftPlotFullPath: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    micrographFullPath: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    fftCorrectedFullPath: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    patchesUsedX: Mapped[int | None] = mapped_column(Integer)
    patchesUsedY: Mapped[int | None] = mapped_column(Integer)
    comments: Mapped[str | None] = mapped_column(String(TEXT_LENGTH))


class MotionCorrectionDrift(Base):
    __tablename__ = "MotionCorrectionDrift"
    __table_args__ = (
        UniqueConstraint(
            "motionCorrectionId", "frameNumber", name="MotionCorrectionDrift_mc_frame"
        ),
    )

    motionCorrectionDriftId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    motionCorrectionId: Mapped[int] = mapped_column(
        ForeignKey("MotionCorrection.motionCorrectionId")
    )
    frameNumber: Mapped[int] = mapped_column(Integer)
    deltaX: Mapped[float | None] = mapped_column(Float)
    deltaY: Mapped[float | None] = mapped_column(Float)


class CTF(Base):
    __tablename__ = "CTF"
    __table_args__ = (
        UniqueConstraint("autoProcProgramId", "motionCorrectionId", name="CTF_program_mc"),
    )

    ctfId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    motionCorrectionId: Mapped[int | None] = mapped_column(
        ForeignKey("MotionCorrection.motionCorrectionId"), index=True
    )
    autoProcProgramId: Mapped[int | None] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), index=True
    )
    boxSizeX: Mapped[float | None] = mapped_column(Float)
    boxSizeY: Mapped[float | None] = mapped_column(Float)
    minResolution: Mapped[float | None] = mapped_column(Float)
    maxResolution: Mapped[float | None] = mapped_column(Float)
    minDefocus: Mapped[float | None] = mapped_column(Float)
    maxDefocus: Mapped[float | None] = mapped_column(Float)
    astigmatism: Mapped[float | None] = mapped_column(Float)
    astigmatismAngle: Mapped[float | None] = mapped_column(Float)
    estimatedResolution: Mapped[float | None] = mapped_column(Float)
    estimatedDefocus: Mapped[float | None] = mapped_column(Float)
    amplitudeContrast: Mapped[float | None] = mapped_column(Float)
    ccValue: Mapped[float | None] = mapped_column(Float)
    fftTheoreticalFullPath: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    # Not in ISPyB (see the note above).
    defocusU: Mapped[float | None] = mapped_column(Float)
    defocusV: Mapped[float | None] = mapped_column(Float)
