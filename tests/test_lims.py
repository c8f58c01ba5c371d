"""The LIMS writer on SQLite, PostgreSQL and MariaDB: round trips and idempotency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prefect_beamline.blocks.lims import LimsDatabase
from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan, Technique
from prefect_beamline.lims import GridResult, ImageQuality, Lims
from prefect_beamline.lims.schema import DataCollectionGroup
from prefect_beamline.lims.writer import event_experiment_type, split_visit


def collection_event(collection_id: int = 42, grid: GridScan | None = None) -> CollectionEvent:
    return CollectionEvent(
        event_id=f"evt-{collection_id}",
        kind=CollectionEventKind.finished,
        technique=Technique.mx,
        experiment_type="gridscan" if grid else "rotation",
        beamline="i03",
        visit="mx12345-3",
        collection_id=collection_id,
        data_files=["/data/i03/mx12345-3/xtal_1_master.h5"],
        image_range=(1, 3600) if grid is None else None,
        grid=grid,
    )


def new_job(lims: Lims, run_key: str = "run-1", automatic: bool = True) -> tuple[int, int]:
    lims.record_data_collection(collection_event())
    job = lims.record_processing_job(
        data_collection_id=42,
        recipe="mx-rotation",
        display_name="mx-rotation (run)",
        automatic=automatic,
        triggered_by="automation:evt-42" if automatic else "cli:alice",
        parameters={"sigma_strong": 3.0, "images_per_chunk": 10},
        run_key=run_key,
    )
    program = lims.start_program(
        processing_job_id=job, programs="spot finding", command_line="cmd", environment="env"
    )
    return job, program


def test_schema_creation_is_repeatable(lims: Lims) -> None:
    lims.create_schema()
    lims.create_schema()
    assert lims.get_collection(1) is None


def test_rotation_collection_round_trips(lims: Lims) -> None:
    event = collection_event()
    assert lims.record_data_collection(event) == 42
    assert lims.record_data_collection(event) == 42
    described = lims.get_collection(42)
    assert described is not None
    assert described.data_files == event.data_files
    assert (described.beamline, described.visit) == ("i03", "mx12345-3")
    assert (described.technique, described.experiment_type) == (Technique.mx, "rotation")
    assert described.image_range == (1, 3600)
    assert described.grid is None


def test_grid_scan_round_trips_with_grid_info(lims: Lims) -> None:
    grid = GridScan(steps_x=12, steps_y=8, dx_um=20.0, dy_um=25.0, snaked=True)
    lims.record_data_collection(collection_event(7, grid))
    lims.record_data_collection(collection_event(7, grid))
    described = lims.get_collection(7)
    assert described is not None
    assert described.experiment_type == "gridscan"
    assert described.grid == grid


def test_same_run_key_is_one_job_and_a_rerun_is_another(lims: Lims) -> None:
    first, program = new_job(lims, "run-1")
    again, program_again = new_job(lims, "run-1")
    rerun, rerun_program = new_job(lims, "run-2", automatic=False)
    assert first == again and program == program_again
    assert rerun != first and rerun_program != program
    jobs = lims.jobs_for_collection(42)
    assert [j.automatic for j in jobs] == [True, False]
    assert jobs[1].triggered_by == "cli:alice"
    assert jobs[0].parameters == {"sigma_strong": 3.0, "images_per_chunk": 10}


def test_program_status_goes_from_running_to_done(lims: Lims) -> None:
    _, program = new_job(lims)
    assert lims.jobs_for_collection(42)[0].program_status == "running"
    lims.finish_program(program, success=False, message="xtal_1_data_000001.h5 is truncated")
    job = lims.jobs_for_collection(42)[0]
    assert job.program_status == "failed"
    assert job.program_message == "xtal_1_data_000001.h5 is truncated"
    lims.finish_program(program, success=True, message="ok")
    assert lims.jobs_for_collection(42)[0].program_status == "success"


def test_image_quality_rewrite_updates_without_duplicates(lims: Lims) -> None:
    _, program = new_job(lims)
    rows = [ImageQuality(i, i * 2, float(i * 100), 2.5) for i in range(1, 101)]
    lims.record_image_quality(program, 42, rows)
    lims.record_image_quality(program, 42, [ImageQuality(5, 99, 1.0, None)])
    stored = lims.image_quality(program)
    assert len(stored) == 100
    assert stored[4] == ImageQuality(5, 99, 1.0, None)
    assert lims.jobs_for_collection(42)[0].n_image_quality_rows == 100


def test_concurrent_image_quality_writers_do_not_duplicate(lims: Lims) -> None:
    _, program = new_job(lims)
    chunks = [[ImageQuality(i, 1, 1.0, None) for i in range(s, s + 25)] for s in (1, 26, 51, 76)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: lims.record_image_quality(program, 42, c), chunks + chunks))
    assert len(lims.image_quality(program)) == 100


def test_attachments_are_registered_once(lims: Lims, tmp_path: Path) -> None:
    _, program = new_job(lims)
    table = tmp_path / "per_image.csv"
    first = lims.add_attachment(program, table, "Result", 1)
    assert lims.add_attachment(program, table, "Result", 1) == first
    lims.add_attachment(program, tmp_path / "plot.png", "Graph", 2)
    assert lims.jobs_for_collection(42)[0].attachments == [str(table), str(tmp_path / "plot.png")]


def test_grid_result_is_recorded_once_per_job(lims: Lims) -> None:
    lims.record_data_collection(collection_event(42, GridScan(steps_x=4, steps_y=3, dx_um=1, dy_um=1)))
    _, program = new_job(lims)
    result = GridResult(1.5, 2.0, 1, 1, 2, 3, 57, "success")
    first = lims.record_grid_result(program, 42, result)
    assert lims.record_grid_result(program, 42, result) == first
    grid = lims.jobs_for_collection(42)[0].grid_result
    assert grid is not None and (grid["x"], grid["y"], grid["max_count"]) == (1.5, 2.0, 57)


def test_unmapped_experiment_type_is_named(lims: Lims) -> None:
    lims.record_data_collection(collection_event())
    with lims.session() as session, session.begin():
        group = session.query(DataCollectionGroup).one()
        group.experimentType = "Energy scan"
    with pytest.raises(ValueError, match="'Energy scan'"):
        lims.get_collection(42)
    with pytest.raises(ValueError, match="'Energy scan'"):
        event_experiment_type("Energy scan")


def test_visits_follow_ispyb_or_are_kept_whole() -> None:
    assert split_visit("mx12345-3") == ("mx", "12345", 3)
    assert split_visit("IH-MX-2532") == ("IH-MX-2532", "", 0)


def test_lims_block_gives_a_working_client(tmp_path: Path) -> None:
    block = LimsDatabase(url=f"sqlite:///{tmp_path / 'block.db'}")
    lims = block.get_lims()
    lims.create_schema()
    assert lims.get_collection(1) is None
    assert "block.db" not in repr(block)  # the URL is a secret
