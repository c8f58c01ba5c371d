"""Tomography rows of the LIMS: one Tomogram per reconstructed volume (a `TomogramRecord`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import DateTime, Double, Float, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import PATH_LENGTH, Base
from prefect_beamline.lims.transaction import check_length, clip, now, program_result_row, retrying
from prefect_beamline.techniques.tomo.analysis import TomogramRecord


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


@retrying
def record_tomogram(
    lims: Lims, program_id: int, data_collection_id: int, record: TomogramRecord
) -> int:
    """The volume one program reconstructed: one Tomogram row per program, updated
    when written again (a retried task). Returns the tomogramId."""
    volume = check_length(record.volume_file, PATH_LENGTH, "Tomogram.volumeFile")
    images = [
        check_length(image, PATH_LENGTH, "Tomogram preview path") if image else None
        for image in (record.central_slice_image, record.xz_image, record.yz_image)
    ]
    with lims.transaction(write=True) as session:
        row = program_result_row(session, Tomogram, program_id, data_collection_id)
        row.volumeFile = volume
        row.fileDirectory = check_length(
            str(Path(volume).parent), PATH_LENGTH, "Tomogram.fileDirectory"
        )
        row.sizeX, row.sizeY, row.sizeZ = record.size_x, record.size_y, record.size_z
        row.pixelSpacing = record.pixel_spacing_angstrom
        row.centralSliceImage, row.projXZ, row.projYZ = images
        row.centreOfRotation = record.centre_of_rotation
        row.centreOfRotationMethod = clip(record.centre_method, 20)
        row.recordTimeStamp = now()
        session.flush()
        return row.tomogramId


@retrying
def tomogram(lims: Lims, program_id: int) -> TomogramRecord | None:
    """The volume a program reconstructed, or None."""
    with lims.transaction(write=False) as session:
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
