"""The Tomogram row: one per program, rewritten in place by a retry, on every database."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import DataCollectionGroup
from prefect_beamline.techniques.tomo import records
from prefect_beamline.techniques.tomo.analysis import TomogramRecord
from prefect_beamline.techniques.tomo.records import Tomogram
from tests.helpers import collection_event
from tests.lims.helpers import count, new_job, start

DC = 3000
SCAN = "/data/i13/mg12345-1/tomo_1.nxs"
RESULTS = "/data/i13/mg12345-1/processing/tomo-reconstruction/dc3000-job1"


def tomo_program(lims: Lims, run_key: str) -> int:
    lims.record_data_collection(collection_event(DC, technique="tomo", data_file=SCAN))
    job = new_job(
        lims,
        run_key,
        collection_id=DC,
        recipe="tomo-reconstruction",
        parameters={"ring_filter": True},
        record=False,
    )
    return start(lims, job, programs="fbp")


RECORD = TomogramRecord(
    volume_file=f"{RESULTS}/volume.h5",
    size_x=128,
    size_y=128,
    size_z=8,
    centre_of_rotation=66.79,
    centre_method="0/180 pair",
    central_slice_image=f"{RESULTS}/slice_xy.png",
    xz_image=f"{RESULTS}/slice_xz.png",
    yz_image=f"{RESULTS}/slice_yz.png",
)


def n_tomograms(lims: Lims) -> int:
    return count(lims, Tomogram)


def test_tomogram_round_trips_in_ispyb_columns(lims: Lims) -> None:
    program = tomo_program(lims, "run-1")
    tomogram_id = records.record_tomogram(lims, program, DC, RECORD)
    assert records.tomogram(lims, program) == RECORD
    with lims.engine.connect() as connection:
        row = connection.execute(select(Tomogram).filter_by(tomogramId=tomogram_id)).one()
        group = connection.scalar(select(DataCollectionGroup.experimentType))
    assert (row.sizeX, row.sizeY, row.sizeZ) == (128, 128, 8)
    assert row.fileDirectory == RESULTS and row.dataCollectionId == DC
    assert row.centreOfRotation == pytest.approx(66.79)
    assert group == "tomo"


def test_writing_a_tomogram_again_updates_its_row(lims: Lims) -> None:
    program = tomo_program(lims, "run-1")
    first = records.record_tomogram(lims, program, DC, RECORD)
    again = records.record_tomogram(lims, program, DC, replace(RECORD, centre_of_rotation=70.0))
    assert first == again and n_tomograms(lims) == 1
    stored = records.tomogram(lims, program)
    assert stored is not None and stored.centre_of_rotation == 70.0


def test_a_rerun_keeps_its_own_tomogram(lims: Lims) -> None:
    first, second = tomo_program(lims, "run-1"), tomo_program(lims, "run-2")
    records.record_tomogram(lims, first, DC, RECORD)
    records.record_tomogram(
        lims, second, DC, replace(RECORD, centre_of_rotation=65.0, centre_method="user")
    )
    assert n_tomograms(lims) == 2
    assert records.tomogram(lims, first) == RECORD
    rerun = records.tomogram(lims, second)
    assert rerun is not None and rerun.centre_method == "user"


def test_tomogram_of_another_collection_is_refused(lims: Lims) -> None:
    program = tomo_program(lims, "run-1")
    with pytest.raises(ValueError, match="processes dataCollectionId 3000"):
        records.record_tomogram(lims, program, 1, RECORD)
