"""The `beamline` worker type is found the way Prefect finds worker types, and tells
module-path entrypoints (started warm) from file paths (started as Prefect does)."""

from __future__ import annotations

import pytest
from prefect.workers.base import BaseWorker

from prefect_beamline.worker import WORKER_TYPE, BeamlineWorker, is_module_entrypoint


def test_prefect_finds_the_beamline_worker_type_through_the_collections_entry_point() -> None:
    assert WORKER_TYPE in BaseWorker.get_all_available_worker_types()
    assert BaseWorker.get_worker_class_from_type(WORKER_TYPE) is BeamlineWorker


def test_worker_polls_its_pool_more_than_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_BEAMLINE_WORKER_POLL_SECONDS", raising=False)
    assert BeamlineWorker(work_pool_name="beamline").poll_seconds == 0.25
    monkeypatch.setenv("PREFECT_BEAMLINE_WORKER_POLL_SECONDS", "0.1")
    assert BeamlineWorker(work_pool_name="beamline").poll_seconds == 0.1


@pytest.mark.parametrize(
    ("entrypoint", "warm"),
    [
        ("prefect_beamline.flows.mx:process_mx", True),
        ("beamline_probe_flows:report_process", True),
        ("flows/mx.py:process_mx", False),
        ("mx.py:process_mx", False),
        ("", False),
        (None, False),
    ],
)
def test_only_module_path_entrypoints_start_warm(entrypoint: str | None, warm: bool) -> None:
    assert is_module_entrypoint(entrypoint) is warm
