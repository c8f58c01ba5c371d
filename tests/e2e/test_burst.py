"""A busy beamline through the real stack: collections announced all at once each become
one completed run with exactly one LIMS job, and soon (issue 17).

Bounds this test states (generous for a loaded 2-core CI machine; measured on a quiet
one: docs/operations.md): every run created within CREATED_WITHIN_S of the first
webhook, every run completed within DONE_WITHIN_S.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from prefect_beamline.runs import TERMINAL_STATES, wait_for_new_flow_run, wait_for_state
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.helpers import announce, next_collection_id

pytestmark = pytest.mark.e2e
ROTATION = "mx-processing/mx-rotation"
N_COLLECTIONS = 10
CREATED_WITHIN_S = 30.0
DONE_WITHIN_S = 150.0


def test_a_burst_of_collections_each_completes_once_within_the_bound(
    stack: LocalStack, tmp_path: Path
) -> None:
    masters = [
        write_mx_collection(
            tmp_path / f"c{index}", n_images=4, images_per_data_file=2, shape=(128, 256), seed=index
        ).master_file
        for index in range(N_COLLECTIONS)
    ]
    events = [demo_event(master, next_collection_id(), None) for master in masters]

    first_post = time.time()
    with ThreadPoolExecutor(N_COLLECTIONS) as pool:
        list(pool.map(lambda event: announce(stack, event), events))
    assert time.time() - first_post < 5.0, "the gateway took the burst too slowly"

    runs = [
        wait_for_new_flow_run(stack.api_url, ROTATION, event.collection_id, set(), CREATED_WITHIN_S)
        for event in events
    ]
    created_s = [datetime.fromisoformat(run.created or "").timestamp() - first_post for run in runs]
    assert max(created_s) <= CREATED_WITHIN_S, created_s

    finals = [wait_for_state(stack.api_url, run.id, TERMINAL_STATES, DONE_WITHIN_S) for run in runs]
    assert [final.state for final in finals] == ["COMPLETED"] * N_COLLECTIONS, stack.logs()
    assert time.time() - first_post <= DONE_WITHIN_S
    lims = stack.lims
    try:
        jobs = [len(lims.jobs_for_collection(event.collection_id)) for event in events]
    finally:
        lims.close()
    assert jobs == [1] * N_COLLECTIONS
