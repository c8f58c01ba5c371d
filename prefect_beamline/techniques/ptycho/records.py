"""Ptychography rows of the LIMS: one PtychographyResult per reconstruction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Double, ForeignKey, Integer, Select, String, select
from sqlalchemy.orm import Mapped, mapped_column

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import PATH_LENGTH, AutoProcProgram, Base
from prefect_beamline.lims.transaction import check_length, now, program_result_row, retrying


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


@dataclass(frozen=True)
class PtychoResult:
    """One ptychographic reconstruction: what the reconstruction returns, the
    PtychographyResult row stores and the report shows.

    The row keeps what runs are sorted and compared by; the shapes, the first error and
    the iteration a run resumed from are in the job's summary.json only (defaults when
    read back from the LIMS, which adds the processing job's id).
    """

    algorithm: str
    iterations: int
    n_positions: int
    final_error: float | None
    object_pixel_m: float | None
    reconstruction_file: str
    processing_job_id: int | None = None
    first_error: float | None = None
    resumed_from_iteration: int = 0
    pattern_shape: tuple[int, int] | None = None
    object_shape: tuple[int, int] | None = None


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


@retrying
def record_ptycho_result(
    lims: Lims, program_id: int, data_collection_id: int, result: PtychoResult
) -> int:
    """The reconstruction of one program (one row per program; rewriting updates it).

    Returns the PtychographyResult id.
    """
    if result.algorithm not in ("epie", "rpie"):
        raise ValueError(f"algorithm must be 'epie' or 'rpie', got {result.algorithm!r}")
    path = check_length(
        str(result.reconstruction_file), PATH_LENGTH, "PtychographyResult.reconstructionFile"
    )
    with lims.transaction(write=True) as session:
        row = program_result_row(session, PtychographyResult, program_id, data_collection_id)
        row.algorithm = result.algorithm
        row.iterations = result.iterations
        row.numberOfPositions = result.n_positions
        row.finalError = result.final_error
        row.objectPixelSize = result.object_pixel_m
        row.reconstructionFile = path
        row.recordTimeStamp = now()
        session.flush()
        return row.ptychographyResultId


def _with_job_ids() -> Select[PtychographyResult, int | None]:
    """Reconstructions with the processing job of their program, oldest first."""
    return (
        select(PtychographyResult, AutoProcProgram.processingJobId)
        .join(
            AutoProcProgram,
            AutoProcProgram.autoProcProgramId == PtychographyResult.autoProcProgramId,
        )
        .order_by(PtychographyResult.ptychographyResultId)
    )


@retrying
def ptycho_results(lims: Lims, data_collection_id: int) -> list[PtychoResult]:
    """Every reconstruction of a collection, oldest first, with its job id."""
    query = _with_job_ids().filter(PtychographyResult.dataCollectionId == data_collection_id)
    with lims.transaction(write=False) as session:
        rows = session.execute(query).all()
    return [_ptycho_result(row, job_id) for row, job_id in rows]


@retrying
def ptycho_result_of_job(lims: Lims, processing_job_id: int) -> PtychoResult | None:
    """The reconstruction a processing job recorded, or None."""
    query = _with_job_ids().filter(AutoProcProgram.processingJobId == processing_job_id)
    with lims.transaction(write=False) as session:
        found = session.execute(query.limit(1)).first()
    return _ptycho_result(found[0], found[1]) if found else None
