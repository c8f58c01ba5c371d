"""MX rows of the LIMS: per-image quality indicators and grid-scan X-ray centring.

The rows store the analysis's own records (`ImageQuality`, `GridResult`) as they are.

Differences from ISPyB, each for idempotent writes:

- `ImageQualityIndicators` keeps the surrogate key `imageQualityIndicatorsId` of older
  ISPyB versions and is unique on (autoProcProgramId, imageNumber). Current ISPyB keys it
  on (dataCollectionId, imageNumber), so a rerun would overwrite the first run's rows;
  here every processing job keeps its own per-image rows.
- `XrayCentring.autoProcProgramId` (unique) ties a grid-scan result to the program that
  found it; ISPyB ties it only to the DataCollectionGroup, which reruns share.
- `XrayCentringResult.maxCount`: the best per-image count, which ISPyB has no column for.
- `ImageQualityIndicators.overloadCount`: the image's pixels masked as overflowed or
  saturated, which ISPyB has no column for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Double,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import Base, DataCollection
from prefect_beamline.lims.transaction import bulk_upsert, first_or_add, lock_program, now, retrying
from prefect_beamline.techniques.mx.analysis import GridResult, ImageQuality


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
    # Not in ISPyB (see the module docstring).
    overloadCount: Mapped[int | None] = mapped_column(Integer)
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


@retrying
def record_image_quality(
    lims: Lims, program_id: int, data_collection_id: int, rows: Sequence[ImageQuality]
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
    recorded = now()
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
            "overloadCount": quality.n_overloads,
            "recordTimeStamp": recorded,
        }
        for _, quality in sorted(by_image.items())
    ]
    with lims.transaction(write=True) as session:
        lock_program(session, program_id, data_collection_id)
        bulk_upsert(
            session, ImageQualityIndicators.__table__, values, ("autoProcProgramId", "imageNumber")
        )


@retrying
def record_grid_result(
    lims: Lims, program_id: int, data_collection_id: int, result: GridResult
) -> int:
    """The X-ray centring found by one program (one per program; rewriting updates it).

    Returns the XrayCentringResult id.
    """
    with lims.transaction(write=True) as session:
        lock_program(session, program_id, data_collection_id)
        collection = session.get(DataCollection, data_collection_id)
        if collection is None:
            raise ValueError(f"DataCollection {data_collection_id} does not exist")
        centring = first_or_add(
            session,
            XrayCentring,
            {"autoProcProgramId": program_id},
            dataCollectionGroupId=collection.dataCollectionGroupId,
            xrayCentringType="2d",
        )
        centring.status = result.status
        session.flush()
        row = first_or_add(session, XrayCentringResult, {"xrayCentringId": centring.xrayCentringId})
        row.centreOfMassX, row.centreOfMassY = result.x, result.y
        row.boundingBoxMinX, row.boundingBoxMinY = result.box_min_x, result.box_min_y
        row.boundingBoxMaxX, row.boundingBoxMaxY = result.box_max_x, result.box_max_y
        row.maxCount = result.max_count
        row.maxVoxelX, row.maxVoxelY = result.max_voxel_x, result.max_voxel_y
        row.numberOfVoxels = result.n_voxels
        row.totalCount = result.total_count
        session.flush()
        return row.xrayCentringResultId


@retrying
def image_quality(lims: Lims, program_id: int) -> list[ImageQuality]:
    """The per-image rows of one program, by image number."""
    with lims.transaction(write=False) as session:
        rows = session.execute(
            select(
                ImageQualityIndicators.imageNumber,
                ImageQualityIndicators.spotTotal,
                ImageQualityIndicators.goodBraggCandidates,
                ImageQualityIndicators.totalIntegratedSignal,
                ImageQualityIndicators.method2Res,
                ImageQualityIndicators.overloadCount,
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
            n_overloads=overloads,
        )
        for number, spots, no_ice, intensity, d_min, overloads in rows
    ]


@retrying
def grid_result(lims: Lims, program_id: int) -> GridResult | None:
    """The X-ray centre one program found, or None."""
    with lims.transaction(write=False) as session:
        found = session.execute(
            select(XrayCentring.status, XrayCentringResult)
            .join(
                XrayCentringResult, XrayCentringResult.xrayCentringId == XrayCentring.xrayCentringId
            )
            .where(XrayCentring.autoProcProgramId == program_id)
            .order_by(XrayCentringResult.xrayCentringResultId)
            .limit(1)
        ).first()
        if found is None:
            return None
        status, row = found
        return GridResult(
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


def results_summary(lims: Lims, program_id: int) -> dict[str, Any]:
    """What the gateway's results endpoint shows of one MX program: per-image totals and
    the X-ray centre (ours, and in the shape dodal's ZocaloResults reads)."""
    from prefect_beamline.zocalo.results import xrc_result

    images = image_quality(lims, program_id)
    centre = grid_result(lims, program_id)
    return {
        "n_images": len(images),
        "n_spots_total": sum(image.n_spots for image in images),
        "best_d_min_angstrom": min(
            (i.d_min_angstrom for i in images if i.d_min_angstrom is not None), default=None
        ),
        "xray_centre": asdict(centre) if centre is not None else None,
        "zocalo_xrc": [xrc_result(centre)] if centre and centre.status == "success" else [],
    }
