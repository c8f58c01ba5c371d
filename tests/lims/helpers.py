"""What the LIMS tests of the core and of every technique's records share (the
announcements they record come from `tests.helpers.collection_event`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import func, select

from prefect_beamline.lims import Lims
from prefect_beamline.lims.schema import Base
from prefect_beamline.techniques.mx.analysis import ImageQuality
from tests.helpers import DC, collection_event

T = TypeVar("T")
# The processing parameters of an MX job (two rows of ProcessingJobParameter).
MX_PARAMETERS = {"sigma_strong": 3.0, "images_per_chunk": 10}


def new_job(
    lims: Lims,
    run_key: str = "run-1",
    *,
    collection_id: int = DC,
    recipe: str = "mx-rotation",
    parameters: Mapping[str, object] = MX_PARAMETERS,
    automatic: bool = True,
    record: bool = True,
) -> int:
    """A ProcessingJob of the collection (recorded first as an MX one unless `record` is
    False: other techniques record their own)."""
    if record:
        lims.record_data_collection(collection_event(collection_id))
    return lims.record_processing_job(
        data_collection_id=collection_id,
        recipe=recipe,
        display_name=f"{recipe} ({run_key})",
        automatic=automatic,
        triggered_by=f"automation:evt-{collection_id}" if automatic else "cli:alice",
        parameters=parameters,
        run_key=run_key,
    )


def start(lims: Lims, job_id: int, programs: str = "spot finding") -> int:
    return lims.start_program(
        processing_job_id=job_id, programs=programs, command_line="cmd", environment="env"
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
