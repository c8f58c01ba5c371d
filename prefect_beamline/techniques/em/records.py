"""Cryo-EM rows of the LIMS: ISPyB's Movie, MotionCorrection, MotionCorrectionDrift, CTF.

ISPyB's cryo-EM tables (Movie, MotionCorrection, MotionCorrectionDrift, CTF), with the
columns the per-movie flow writes. Differences, each for idempotent writes:
`Movie` is unique on (dataCollectionId, movieFullPath); `MotionCorrection` on
(autoProcProgramId, movieId); `MotionCorrectionDrift` on (motionCorrectionId,
frameNumber); `CTF` on (autoProcProgramId, motionCorrectionId). CTF.defocusU/defocusV
are not in ISPyB (it keeps estimatedDefocus, the mean, and astigmatism); kept here so
the fit reads back whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, mapped_column

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import (
    PATH_LENGTH,
    TEXT_LENGTH,
    AutoProcProgram,
    Base,
    DataCollection,
)
from prefect_beamline.lims.transaction import (
    check_length,
    first_or_add,
    lock_program,
    now,
    retrying,
    rows_by_key,
)


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


@dataclass(frozen=True)
class MovieRecord:
    """A movie of a collection as the LIMS holds it."""

    movie_id: int
    movie_number: int
    path: str


@dataclass(frozen=True)
class MotionResult:
    """Motion correction of one movie, as the analysis measures it and the
    MotionCorrection row (+ one MotionCorrectionDrift row per frame) stores it.

    Drift (dx, dy) per frame in pixels from frame 1; motion in Å (RELION's accumulated
    motion); file paths of the dose-weighted micrograph, the drift plot and the power
    spectrum. Early and late motion go to the STAR tables, not to ISPyB: read back from
    the LIMS they are None.
    """

    drift: list[tuple[float, float]]
    total_motion: float
    dose_per_frame: float
    dose_weighted: bool
    patches: tuple[int, int]
    micrograph_path: str
    drift_plot_path: str
    power_spectrum_path: str
    early_motion: float | None = None
    late_motion: float | None = None
    # RELION's per-movie motion metadata STAR (not a LIMS column: None when read back).
    metadata_path: str | None = None

    @property
    def n_frames(self) -> int:
        return len(self.drift)

    @property
    def average_motion_per_frame(self) -> float:
        return self.total_motion / max(self.n_frames - 1, 1)


@dataclass(frozen=True)
class CTFResult:
    """A CTF fit as the CTF row stores it: defocus U/V (Å), angle (degrees), fit
    resolution (Å), cross-correlation, and the search it came from."""

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
    # The diagnostic power spectrum MRC RELION shows (rlnCtfImage); not a LIMS column.
    ctf_image_path: str | None = None


@dataclass(frozen=True)
class EMMovieResult:
    """One movie's motion correction and CTF fit: the record the per-movie flow builds,
    writes to the LIMS and the STAR tables, and shows in its report.

    Pixel size and step timings are not LIMS columns (None and empty when read back);
    `ctf` is None only for a database holding a motion correction without its fit.
    """

    movie_path: str
    motion: MotionResult
    ctf: CTFResult | None
    pixel_size_angstrom: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedMovieResult:
    """Where the LIMS holds one movie's result: its program (status True/False once
    finished, None while running), the Movie row and the MotionCorrection row."""

    program_id: int
    program_status: bool | None
    movie: MovieRecord
    motion_correction_id: int
    result: EMMovieResult


@retrying
def record_movie(
    lims: Lims,
    data_collection_id: int,
    movie_path: str,
    *,
    n_frames: int | None = None,
    dose_per_frame: float | None = None,
) -> int:
    """The Movie row of one movie of a collection (numbered in order of arrival)."""
    check_length(movie_path, PATH_LENGTH, "Movie.movieFullPath")
    with lims.transaction(write=True) as session:
        collection = session.get(
            DataCollection, data_collection_id, with_for_update={"key_share": True}
        )
        if collection is None:
            raise ValueError(f"DataCollection {data_collection_id} does not exist")
        movie = session.scalar(
            select(Movie).filter_by(dataCollectionId=data_collection_id, movieFullPath=movie_path)
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
                createdTimeStamp=now(),
            )
            session.add(movie)
        if n_frames is not None:
            movie.numberOfFrames = n_frames
            if dose_per_frame is not None:
                movie.fluence = dose_per_frame * n_frames
        session.flush()
        return movie.movieId


@retrying
def movies_for_collection(lims: Lims, data_collection_id: int) -> list[MovieRecord]:
    """Every movie recorded for a collection, by movie number."""
    with lims.transaction(write=False) as session:
        rows = session.execute(
            select(Movie.movieId, Movie.movieNumber, Movie.movieFullPath)
            .filter_by(dataCollectionId=data_collection_id)
            .order_by(Movie.movieNumber, Movie.movieId)
        ).all()
    return [MovieRecord(movie_id, number or 0, path or "") for movie_id, number, path in rows]


@retrying
def record_motion_correction(
    lims: Lims, program_id: int, data_collection_id: int, movie_id: int, result: MotionResult
) -> int:
    """MotionCorrection and its per-frame drift, once per (program, movie)."""
    for path in (result.micrograph_path, result.drift_plot_path, result.power_spectrum_path):
        check_length(path, PATH_LENGTH, "MotionCorrection file path")
    with lims.transaction(write=True) as session:
        lock_program(session, program_id, data_collection_id)
        movie = session.get(Movie, movie_id)
        if movie is None:
            raise ValueError(f"Movie {movie_id} does not exist")
        row = first_or_add(
            session, MotionCorrection, {"autoProcProgramId": program_id, "movieId": movie_id}
        )
        row.dataCollectionId = data_collection_id
        row.imageNumber = movie.movieNumber or 0
        row.firstFrame, row.lastFrame = 1, result.n_frames
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


@retrying
def record_ctf(lims: Lims, program_id: int, motion_correction_id: int, result: CTFResult) -> int:
    """The CTF fit of one motion-corrected micrograph, once per program."""
    with lims.transaction(write=True) as session:
        lock_program(session, program_id)
        row = first_or_add(
            session,
            CTF,
            {"autoProcProgramId": program_id, "motionCorrectionId": motion_correction_id},
        )
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


def record_movie_result(
    lims: Lims, program_id: int, data_collection_id: int, movie_id: int, result: EMMovieResult
) -> tuple[int, int | None]:
    """A movie's frame count and fluence, its motion correction and its CTF fit.

    Returns (motionCorrectionId, ctfId); each write is idempotent per program.
    """
    motion = result.motion
    record_movie(
        lims,
        data_collection_id,
        result.movie_path,
        n_frames=motion.n_frames,
        dose_per_frame=motion.dose_per_frame,
    )
    mc_id = record_motion_correction(lims, program_id, data_collection_id, movie_id, motion)
    ctf_id = record_ctf(lims, program_id, mc_id, result.ctf) if result.ctf else None
    return mc_id, ctf_id


def _motion(mc: MotionCorrection, drift: list[tuple[float, float]]) -> MotionResult:
    return MotionResult(
        drift=drift,
        total_motion=mc.totalMotion or 0.0,
        dose_per_frame=mc.dosePerFrame or 0.0,
        dose_weighted=bool(mc.doseWeight),
        patches=(mc.patchesUsedX or 0, mc.patchesUsedY or 0),
        micrograph_path=mc.micrographFullPath or "",
        drift_plot_path=mc.driftPlotFullPath or "",
        power_spectrum_path=mc.fftCorrectedFullPath or "",
    )


def _ctf(row: CTF | None) -> CTFResult | None:
    if row is None:
        return None
    return CTFResult(
        defocus_u=row.defocusU or 0.0,
        defocus_v=row.defocusV or 0.0,
        angle_deg=row.astigmatismAngle or 0.0,
        fit_resolution=row.estimatedResolution or 0.0,
        cc=row.ccValue or 0.0,
        amplitude_contrast=row.amplitudeContrast or 0.0,
        box_size=int(row.boxSizeX or 0),
        min_resolution=row.minResolution or 0.0,
        max_resolution=row.maxResolution or 0.0,
        min_defocus=row.minDefocus or 0.0,
        max_defocus=row.maxDefocus or 0.0,
        power_spectrum_path=row.fftTheoreticalFullPath or "",
    )


@retrying
def em_results(lims: Lims, data_collection_id: int) -> list[RecordedMovieResult]:
    """Every (program, movie) result of a collection, oldest program first."""
    with lims.transaction(write=False) as session:
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
        drifts = rows_by_key(
            session,
            MotionCorrectionDrift.motionCorrectionId,
            [mc.motionCorrectionId for mc, *_ in rows],
            MotionCorrectionDrift.deltaX,
            MotionCorrectionDrift.deltaY,
            order_by=[MotionCorrectionDrift.motionCorrectionId, MotionCorrectionDrift.frameNumber],
        )
        return [
            RecordedMovieResult(
                program_id=mc.autoProcProgramId or 0,
                program_status=None if status is None else bool(status),
                movie=MovieRecord(movie.movieId, movie.movieNumber or 0, movie.movieFullPath or ""),
                motion_correction_id=mc.motionCorrectionId,
                result=EMMovieResult(
                    movie_path=movie.movieFullPath or "",
                    motion=_motion(
                        mc,
                        [
                            (dx or 0.0, dy or 0.0)
                            for dx, dy in drifts.get(mc.motionCorrectionId, [])
                        ],
                    ),
                    ctf=_ctf(ctf),
                ),
            )
            for mc, movie, ctf, status in rows
        ]
