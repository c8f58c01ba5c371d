"""The LIMS writer on SQLite, PostgreSQL and MariaDB: round trips, idempotency, races."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import OperationalError

from prefect_beamline.events import CollectionEventKind, GridScan
from prefect_beamline.lims import Lims, transaction
from prefect_beamline.lims.collections import join_visit, split_visit
from prefect_beamline.lims.schema import (
    AutoProcProgram,
    AutoProcProgramAttachment,
    BLSession,
    DataCollection,
    DataCollectionGroup,
    GridInfo,
    ProcessingJob,
    ProcessingJobParameter,
    Proposal,
    ispyb_experiment_type,
    technique_for_experiment_type,
)
from prefect_beamline.techniques import registry
from prefect_beamline.techniques.mx import records as mx_records
from prefect_beamline.techniques.mx.analysis import GridResult
from prefect_beamline.techniques.mx.records import ImageQualityIndicators
from tests.helpers import DC, MASTER, collection_event
from tests.lims.helpers import (
    all_at_once,
    count,
    new_job,
    new_program,
    quality_rows,
    start,
)

# -- schema and collections ---------------------------------------------------------------


def test_schema_creation_is_repeatable(lims: Lims) -> None:
    lims.create_schema()
    lims.create_schema()
    tables = set(inspect(lims.engine).get_table_names())
    assert {"Proposal", "BLSession", "DataCollection", "ImageQualityIndicators"} <= tables
    assert "XrayCentringResult" in tables


def test_racing_schema_creations_all_succeed(lims_url: str) -> None:
    lims = Lims(lims_url)
    all_at_once(4, lims.create_schema)
    assert "ImageQualityIndicators" in inspect(lims.engine).get_table_names()
    lims.close()


def test_unknown_collection_is_none(lims: Lims) -> None:
    assert lims.get_collection(123456) is None


def test_rotation_collection_round_trips(lims: Lims) -> None:
    event = collection_event()
    assert lims.record_data_collection(event) == DC
    described = lims.get_collection(DC)
    assert described is not None
    assert described.data_files == [MASTER]
    assert (described.beamline, described.visit) == ("i03", "mx12345-3")
    assert (described.technique, described.experiment_type) == ("mx", "rotation")
    assert described.image_range == (1, 3600)
    assert described.grid is None


def test_recording_a_collection_again_adds_no_rows(lims: Lims) -> None:
    started = collection_event(kind=CollectionEventKind.started)
    for event in (started, started, collection_event(), collection_event()):
        lims.record_data_collection(event)
    tables = (Proposal, BLSession, DataCollectionGroup, DataCollection)
    assert [count(lims, table) for table in tables] == [1, 1, 1, 1]


def test_collection_is_stored_in_ispyb_columns(lims: Lims) -> None:
    lims.record_data_collection(collection_event(kind=CollectionEventKind.started))
    lims.record_data_collection(collection_event())
    with lims.engine.connect() as connection:
        row = connection.execute(select(DataCollection.__table__)).one()
        experiment_type = connection.scalar(select(DataCollectionGroup.experimentType))
        proposal = connection.execute(select(Proposal.__table__)).one()
        visit_number = connection.scalar(select(BLSession.visit_number))
    assert (row.imageDirectory, row.fileTemplate) == ("/data/i03/mx12345-3/", "xtal_1_master.h5")
    assert (row.imagePrefix, row.imageSuffix) == ("xtal_1", "h5")
    assert (row.startImageNumber, row.numberOfImages) == (1, 3600)
    assert experiment_type == "OSC"
    assert (proposal.proposalCode, proposal.proposalNumber, visit_number) == ("mx", "12345", 3)
    assert row.runStatus == "DataCollection Successful"
    assert row.startTime is not None and row.endTime is not None


def test_grid_scan_round_trips_with_grid_info(lims: Lims) -> None:
    grid = GridScan(steps_x=12, steps_y=8, dx_um=20.0, dy_um=25.0, snaked=True)
    lims.record_data_collection(collection_event(7, grid=grid))
    lims.record_data_collection(collection_event(7, grid=grid))
    described = lims.get_collection(7)
    assert described is not None
    assert (described.technique, described.experiment_type) == ("mx", "gridscan")
    assert described.grid == grid
    assert count(lims, GridInfo) == 1
    with lims.engine.connect() as connection:
        row = connection.execute(select(GridInfo)).one()
    assert (row.steps_x, row.steps_y, row.dx_mm, row.snaked) == (12, 8, 0.02, True)
    assert row.dataCollectionId == 7 and row.dataCollectionGroupId is not None


def test_visit_that_does_not_parse_is_kept_whole(lims: Lims) -> None:
    lims.record_data_collection(collection_event(visit="IH-MX-2532"))
    described = lims.get_collection(DC)
    assert described is not None and described.visit == "IH-MX-2532"


def test_visit_on_another_beamline_is_rejected_naming_both(lims: Lims) -> None:
    lims.record_data_collection(collection_event(1))
    with pytest.raises(ValueError, match=r"'mx12345-3' is on beamline 'i03'.*'i04'"):
        lims.record_data_collection(collection_event(2, beamline="i04"))
    assert lims.get_collection(2) is None


def test_unmapped_experiment_type_in_the_database_is_named(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    with lims.engine.begin() as connection:
        connection.execute(update(DataCollectionGroup).values(experimentType="Energy scan"))
    with pytest.raises(ValueError, match="experimentType 'Energy scan' is not mapped"):
        lims.get_collection(DC)


def test_unmapped_experiment_type_of_an_event_is_named(lims: Lims) -> None:
    with pytest.raises(ValueError, match="'mx' with experiment_type 'helical'"):
        lims.record_data_collection(collection_event(experiment_type="helical"))
    assert count(lims, DataCollection) == 0


def test_data_path_longer_than_ispyb_holds_is_rejected(lims: Lims) -> None:
    deep = "/data/" + "d" * 260 + "/xtal_master.h5"
    with pytest.raises(ValueError, match=r"DataCollection.imageDirectory is \d+ characters"):
        lims.record_data_collection(collection_event(data_file=deep))


# -- processing jobs and programs ---------------------------------------------------------


def test_same_run_key_gives_one_job(lims: Lims) -> None:
    first = new_job(lims, "run-1")
    assert new_job(lims, "run-1") == first
    assert count(lims, ProcessingJob) == 1
    assert count(lims, ProcessingJobParameter) == 4  # 2 parameters, triggered_by, run key


def test_new_run_key_is_a_rerun_with_its_own_job(lims: Lims) -> None:
    first = new_job(lims, "run-1")
    rerun = new_job(lims, "run-2", automatic=False)
    assert rerun != first
    assert [job.processing_job_id for job in lims.jobs_for_collection(DC)] == [first, rerun]


def test_racing_retries_of_one_run_record_one_job(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    job_ids = all_at_once(4, lambda: new_job(lims, "run-1"))
    assert len(set(job_ids)) == 1
    assert count(lims, ProcessingJob) == 1


def test_job_for_unknown_collection_is_rejected(lims: Lims) -> None:
    with pytest.raises(ValueError, match="DataCollection 999 is not in the LIMS"):
        lims.record_processing_job(
            data_collection_id=999,
            recipe="mx-rotation",
            display_name="x",
            automatic=True,
            triggered_by="automation:e",
            parameters={},
            run_key="run-1",
        )


def test_reserved_parameter_name_is_rejected(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    with pytest.raises(ValueError, match="'triggered_by' is reserved"):
        lims.record_processing_job(
            data_collection_id=DC,
            recipe="mx-rotation",
            display_name="x",
            automatic=True,
            triggered_by="automation:e",
            parameters={"triggered_by": "me"},
            run_key="run-1",
        )


def test_program_status_goes_queued_running_failed_success(lims: Lims) -> None:
    job = new_job(lims)
    assert lims.jobs_for_collection(DC)[0].program_status == "queued"
    program = start(lims, job)
    assert lims.jobs_for_collection(DC)[0].program_status == "running"
    lims.finish_program(program, success=False, message="xtal_1_data_000001.h5 is truncated")
    failed = lims.jobs_for_collection(DC)[0]
    assert (failed.program_status, failed.program_message) == (
        "failed",
        "xtal_1_data_000001.h5 is truncated",
    )
    assert failed.program_end is not None
    lims.finish_program(program, success=True, message="8 images analysed")
    assert lims.jobs_for_collection(DC)[0].program_status == "success"


def test_program_status_is_stored_as_ispyb_encodes_it(lims: Lims) -> None:
    program = new_program(lims)

    def status() -> object:
        with lims.engine.connect() as connection:
            return connection.scalar(select(AutoProcProgram.processingStatus))

    assert status() is None
    lims.finish_program(program, success=False, message="no")
    assert status() in (False, 0)
    lims.finish_program(program, success=True, message="yes")
    assert status() in (True, 1)


def test_starting_a_program_again_returns_it_running(lims: Lims) -> None:
    job = new_job(lims)
    program = start(lims, job)
    lims.finish_program(program, success=False, message="worker died")
    assert start(lims, job) == program
    assert count(lims, AutoProcProgram) == 1
    again = lims.jobs_for_collection(DC)[0]
    assert (again.program_status, again.program_message, again.program_end) == (
        "running",
        None,
        None,
    )


def test_racing_program_starts_give_one_program(lims: Lims) -> None:
    job = new_job(lims)
    assert len(set(all_at_once(4, lambda: start(lims, job)))) == 1
    assert count(lims, AutoProcProgram) == 1


def test_finishing_an_unknown_program_names_it(lims: Lims) -> None:
    with pytest.raises(ValueError, match="AutoProcProgram 31337 does not exist"):
        lims.finish_program(31337, success=True, message="")


# -- results ------------------------------------------------------------------------------


def test_attachments_are_registered_once_per_path(lims: Lims, tmp_path: Path) -> None:
    program = new_program(lims)
    table = tmp_path / "per_image.csv"
    first = lims.add_attachment(program, table, "Result", 2)
    assert lims.add_attachment(program, table, "Result", 1) == first
    lims.add_attachment(program, tmp_path / "plot.png", "Graph")
    lims.add_attachment(program, tmp_path / "other" / "per_image.csv", "Result")
    assert count(lims, AutoProcProgramAttachment) == 3
    assert lims.jobs_for_collection(DC)[0].attachments == [
        str(table),
        str(tmp_path / "plot.png"),
        str(tmp_path / "other" / "per_image.csv"),
    ]
    with lims.engine.connect() as connection:
        ranks = connection.scalars(select(AutoProcProgramAttachment.importanceRank)).all()
    assert sorted(ranks, key=str) == sorted([1, None, None], key=str)


@pytest.mark.parametrize(
    ("path", "file_type", "error"),
    [
        ("/results/a.csv", "Table", "fileType must be one of"),
        ("results/a.csv", "Result", "must be absolute"),
    ],
)
def test_bad_attachment_is_rejected(lims: Lims, path: str, file_type: str, error: str) -> None:
    program = new_program(lims)
    with pytest.raises(ValueError, match=error):
        lims.add_attachment(program, Path(path), file_type)


def test_jobs_for_collection_reports_everything(lims: Lims, tmp_path: Path) -> None:
    lims.record_data_collection(
        collection_event(grid=GridScan(steps_x=2, steps_y=2, dx_um=5, dy_um=5))
    )
    automatic = new_program(lims, "run-1")
    mx_records.record_image_quality(lims, automatic, DC, quality_rows(range(1, 5)))
    lims.add_attachment(automatic, tmp_path / "summary.json", "Result", 1)
    mx_records.record_grid_result(lims, automatic, DC, GridResult(0.5, 0.5, 0, 0, 1, 1, 12))
    lims.finish_program(automatic, success=True, message="4 images analysed")
    manual = new_job(lims, "run-2", automatic=False)

    first, second = lims.jobs_for_collection(DC)
    assert (first.automatic, first.triggered_by, first.run_key) == (
        True,
        "automation:evt-42",
        "run-1",
    )
    assert first.parameters == {"sigma_strong": 3.0, "images_per_chunk": 10}
    assert (first.program_id, first.program_status, first.program_message) == (
        automatic,
        "success",
        "4 images analysed",
    )
    assert first.attachments == [str(tmp_path / "summary.json")]
    assert first.results_dir == str(tmp_path)
    assert len(mx_records.image_quality(lims, automatic)) == 4
    assert mx_records.grid_result(lims, automatic) == GridResult(0.5, 0.5, 0, 0, 1, 1, 12)
    assert first.comments == "automatic, triggered by automation:evt-42"
    assert (second.processing_job_id, second.automatic, second.triggered_by) == (
        manual,
        False,
        "cli:alice",
    )
    assert (second.program_status, second.program_id) == ("queued", None)
    assert first.as_dict()["results_dir"] == str(tmp_path)


# -- pure mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visit", "parts"),
    [
        ("mx12345-3", ("mx", "12345", 3)),
        ("cm31105-10", ("cm", "31105", 10)),
        ("IH-MX-2532", ("IH-MX-2532", "", 0)),
        ("mx12345", ("mx12345", "", 0)),
        ("mx12345-01", ("mx12345-01", "", 0)),
    ],
)
def test_visits_split_as_ispyb_stores_them_and_join_back(
    visit: str, parts: tuple[str, str, int]
) -> None:
    assert split_visit(visit) == parts
    assert join_visit(*parts) == visit


def test_every_mapped_experiment_type_round_trips() -> None:
    for spec in registry().values():
        for ispyb, experiment_type in spec.experiment_types:
            assert technique_for_experiment_type(ispyb) == (spec.name, experiment_type)
            stored = ispyb_experiment_type(spec.name, experiment_type)
            assert technique_for_experiment_type(stored) == (spec.name, experiment_type)
    assert ispyb_experiment_type("tomo", "default") == "tomo"  # ISPyB's spelling


def flaky(failures: list[Exception]) -> Callable[[], str]:
    """A call that raises the given driver errors in turn (wrapped as SQLAlchemy does),
    then succeeds."""
    calls = iter(failures)

    def call() -> str:
        driver_error = next(calls, None)
        if driver_error is not None:
            raise OperationalError("INSERT ...", {}, driver_error)
        return "done"

    return call


def test_locked_database_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "FIRST_BACKOFF_S", 0.001)
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
    retried = transaction.retrying(
        flaky([sqlite3.OperationalError("database is locked"), deadlock])
    )
    assert retried() == "done"


def test_other_database_errors_are_not_retried() -> None:
    missing = sqlite3.OperationalError("no such table: DataCollection")
    retried = transaction.retrying(flaky([missing]))  # a retry would return "done"
    with pytest.raises(OperationalError, match="no such table"):
        retried()


# -- processes ----------------------------------------------------------------------------


def _write_in_another_process(lims: Lims, program: int, numbers: Sequence[int]) -> int:
    rows = quality_rows(range(numbers[0], numbers[-1] + 1))
    mx_records.record_image_quality(lims, program, DC, rows)
    return len(mx_records.image_quality(lims, program))


def test_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    lims = Lims(f"sqlite:///{tmp_path / 'shared' / 'lims.db'}")
    lims.create_schema()
    program = new_program(lims)
    chunks: list[Any] = [range(1, 301), range(201, 501), range(401, 701)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        pool.starmap(_write_in_another_process, [(lims, program, c) for c in chunks])
    assert pickle.loads(pickle.dumps(lims)).url == lims.url
    assert count(lims, ImageQualityIndicators) == 700
    lims.close()
