"""Serial-crystallography rows of the LIMS, in ISPyB's SSX tables where they exist.

- `SSXDataCollection` (ISPyB 2022_11_21_SSX_experiment): one per collection, the
  experiment's delivery (`experimentName` holds ISPyB's "SSX-Jet" or "SSX-Chip").
- `SSXProcessingResult` (ISPyB 2024_07_26_SSX_processing_results): the hit rate of a
  processing program. Differences, for idempotent writes and the hit finder's counts:
  `autoProcProgramId` (unique) ties the row to the program that wrote it, where ISPyB
  has only the collection (reruns would share a row); `numberOfFrames`,
  `numberOfHits`, `meanPeaksPerHit` are not in ISPyB. ISPyB also spells the collection
  column `datadcollectionId` in its CREATE TABLE (a typo its foreign key does not
  share); here it is `dataCollectionId`.
- `SSXChunkHitRate` (not in ISPyB; same style): the hit rate of each chunk of frames as
  it finishes, unique on (autoProcProgramId, firstImage), for the live view and the
  hit-rate-over-time plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import Base
from prefect_beamline.lims.transaction import (
    bulk_upsert,
    first_or_add,
    lock_program,
    now,
    program_result_row,
    retrying,
)
from prefect_beamline.techniques.ssx.analysis import ChunkHitRate, SerialSummary


class SSXDataCollection(Base):
    __tablename__ = "SSXDataCollection"

    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), primary_key=True
    )
    repetitionRate: Mapped[float | None] = mapped_column(Float)
    energyBandwidth: Mapped[float | None] = mapped_column(Float)
    monoStripe: Mapped[str | None] = mapped_column(String(255))
    jetSpeed: Mapped[float | None] = mapped_column(Float)
    jetSize: Mapped[float | None] = mapped_column(Float)
    chipPattern: Mapped[str | None] = mapped_column(String(255))
    chipModel: Mapped[str | None] = mapped_column(String(255))
    reactionDuration: Mapped[float | None] = mapped_column(Float)
    laserEnergy: Mapped[float | None] = mapped_column(Float)
    experimentName: Mapped[str | None] = mapped_column(String(255))


class SSXProcessingResult(Base):
    __tablename__ = "SSXProcessingResult"

    ssxProcessingResultId: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True
    )
    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    hitRate: Mapped[float | None] = mapped_column(Float)
    indexingRate: Mapped[float | None] = mapped_column(Float)
    # enum('Preliminary','Final'), enum('Running','Failed','Success')
    indexingType: Mapped[str | None] = mapped_column(String(11))
    status: Mapped[str | None] = mapped_column(String(7))
    createdTimeStamp: Mapped[datetime | None] = mapped_column(DateTime)
    lastUpdate: Mapped[datetime | None] = mapped_column(DateTime)
    # Not in ISPyB (see the module docstring).
    autoProcProgramId: Mapped[int | None] = mapped_column(
        ForeignKey("AutoProcProgram.autoProcProgramId"), unique=True
    )
    numberOfFrames: Mapped[int | None] = mapped_column(Integer)
    numberOfHits: Mapped[int | None] = mapped_column(Integer)
    meanPeaksPerHit: Mapped[float | None] = mapped_column(Float)


class SSXChunkHitRate(Base):
    __tablename__ = "SSXChunkHitRate"
    __table_args__ = (
        UniqueConstraint("autoProcProgramId", "firstImage", name="SSXChunkHitRate_program_first"),
    )

    ssxChunkHitRateId: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    autoProcProgramId: Mapped[int] = mapped_column(ForeignKey("AutoProcProgram.autoProcProgramId"))
    dataCollectionId: Mapped[int] = mapped_column(
        ForeignKey("DataCollection.dataCollectionId"), index=True
    )
    firstImage: Mapped[int] = mapped_column(Integer)
    lastImage: Mapped[int] = mapped_column(Integer)
    numberOfFrames: Mapped[int] = mapped_column(Integer)
    numberOfHits: Mapped[int] = mapped_column(Integer)
    hitRate: Mapped[float] = mapped_column(Float)
    meanPeaksPerHit: Mapped[float | None] = mapped_column(Float)
    finishedAt: Mapped[datetime | None] = mapped_column(DateTime)


ISPYB_EXPERIMENT = {"jet": "SSX-Jet", "chip": "SSX-Chip"}


@retrying
def record_chunk_hit_rates(
    lims: Lims, program_id: int, data_collection_id: int, chunks: Sequence[ChunkHitRate]
) -> None:
    """One row per chunk of one program; writing a chunk again updates its row."""
    values = [
        {
            "autoProcProgramId": program_id,
            "dataCollectionId": data_collection_id,
            "firstImage": chunk.first_image,
            "lastImage": chunk.last_image,
            "numberOfFrames": chunk.n_frames,
            "numberOfHits": chunk.n_hits,
            "hitRate": chunk.hit_rate,
            "meanPeaksPerHit": chunk.mean_peaks_per_hit,
            "finishedAt": datetime.fromtimestamp(chunk.finished_at, UTC).replace(tzinfo=None),
        }
        for chunk in chunks
    ]
    with lims.transaction(write=True) as session:
        lock_program(session, program_id, data_collection_id)
        bulk_upsert(session, SSXChunkHitRate.__table__, values, ("autoProcProgramId", "firstImage"))


@retrying
def record_ssx_result(
    lims: Lims,
    program_id: int,
    data_collection_id: int,
    summary: SerialSummary,
    experiment_type: str,
) -> None:
    """The collection's SSXDataCollection row (once) and this program's result."""
    stats = summary.as_dict()
    with lims.transaction(write=True) as session:
        row = program_result_row(session, SSXProcessingResult, program_id, data_collection_id)
        row.hitRate = float(summary.hit_rate)
        row.status = "Success"
        row.numberOfFrames = summary.n_frames
        row.numberOfHits = summary.n_hits
        mean = stats["mean_peaks_per_hit"]
        row.meanPeaksPerHit = float(mean) if isinstance(mean, int | float) else None
        row.createdTimeStamp = row.createdTimeStamp or now()
        row.lastUpdate = now()
        first_or_add(
            session,
            SSXDataCollection,
            {"dataCollectionId": data_collection_id},
            experimentName=ISPYB_EXPERIMENT.get(experiment_type, experiment_type),
        )


@retrying
def ssx_result(lims: Lims, program_id: int) -> SSXProcessingResult | None:
    """The result row one program wrote, or None."""
    with lims.transaction(write=False) as session:
        return session.scalar(select(SSXProcessingResult).filter_by(autoProcProgramId=program_id))


@retrying
def chunk_hit_rates(lims: Lims, program_id: int) -> list[ChunkHitRate]:
    """The chunk rows of one program, by first image."""
    with lims.transaction(write=False) as session:
        rows = session.scalars(
            select(SSXChunkHitRate)
            .filter_by(autoProcProgramId=program_id)
            .order_by(SSXChunkHitRate.firstImage)
        ).all()
    return [
        ChunkHitRate(
            first_image=row.firstImage,
            last_image=row.lastImage,
            n_frames=row.numberOfFrames,
            n_hits=row.numberOfHits,
            hit_rate=row.hitRate,
            mean_peaks_per_hit=row.meanPeaksPerHit,
            finished_at=(row.finishedAt or datetime(1970, 1, 1)).replace(tzinfo=UTC).timestamp(),
        )
        for row in rows
    ]
