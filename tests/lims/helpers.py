"""What the LIMS tests of the core and of every technique's records share."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import func, select

from prefect_beamline.events import CollectionEvent, CollectionEventKind, GridScan
from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import Base
from prefect_beamline.techniques.mx.analysis import ImageQuality

T = TypeVar("T")
DC = 42
MASTER = "/data/i03/mx12345-3/xtal_1_master.h5"


def collection_event(
    collection_id: int = DC,
    *,
    kind: CollectionEventKind = CollectionEventKind.finished,
    grid: GridScan | None = None,
    visit: str = "mx12345-3",
    beamline: str = "i03",
    technique: str = "mx",
    experiment_type: str | None = None,
    data_file: str = MASTER,
) -> CollectionEvent:
    return CollectionEvent(
        event_id=f"evt-{collection_id}-{kind.value}",
        kind=kind,
        technique=technique,
        experiment_type=experiment_type or ("gridscan" if grid else "rotation"),
        beamline=beamline,
        visit=visit,
        collection_id=collection_id,
        data_files=[data_file],
        image_range=(1, 3600) if grid is None else None,
        grid=grid,
    )


def new_job(
    lims: Lims, run_key: str = "run-1", *, automatic: bool = True, record: bool = True
) -> int:
    """A ProcessingJob of collection DC (recorded first unless `record` is False)."""
    if record:
        lims.record_data_collection(collection_event())
    return lims.record_processing_job(
        data_collection_id=DC,
        recipe="mx-rotation",
        display_name=f"mx-rotation ({run_key})",
        automatic=automatic,
        triggered_by="automation:evt-42" if automatic else "cli:alice",
        parameters={"sigma_strong": 3.0, "images_per_chunk": 10},
        run_key=run_key,
    )


def start(lims: Lims, job_id: int) -> int:
    return lims.start_program(
        processing_job_id=job_id, programs="spot finding", command_line="cmd", environment="env"
    )


def new_program(lims: Lims, run_key: str = "run-1") -> int:
    return start(lims, new_job(lims, run_key))


def count(lims: Lims, table: type[Base]) -> int:
    with lims.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def all_at_once(n_threads: int, call: Callable[[], T]) -> list[T]:
    """Run `call` on n threads released together, to make their transactions race."""
    barrier = threading.Barrier(n_threads)

    def run() -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(lambda _: run(), range(n_threads)))


def quality_rows(numbers: range, spots: int = 3) -> list[ImageQuality]:
    """MX per-image rows with values derived from the image number."""
    return [ImageQuality(i, spots * i, float(i * 100), 2.5, n_spots_no_ice=i) for i in numbers]
