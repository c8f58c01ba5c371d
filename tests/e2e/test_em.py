"""Cryo-EM on the fly through real parts: one `images_ready` webhook per movie -> gateway
-> Prefect event -> automation -> one `em-movie` flow run per movie (in parallel, under
the deployment's concurrency limit) -> micrograph, STAR rows, LIMS rows; a half-written
movie fails its own run only; `finished` -> session summary; a CLI rerun of the
collection reprocesses every movie with changed parameters, one run per movie.
"""

from __future__ import annotations

import getpass
import shutil
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from prefect_beamline.demo import post_event
from prefect_beamline.events import CollectionEventKind
from prefect_beamline.formats.star import read_micrographs
from prefect_beamline.runs import FlowRunInfo
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.em import records
from prefect_beamline.techniques.em.demo import (
    MOVIE_DEPLOYMENT,
    SUMMARY_DEPLOYMENT,
    em_event,
    session_parameters,
    wait_for_runs,
)
from prefect_beamline.techniques.em.synth import write_em_session
from tests.e2e.helpers import cli_rerun, next_collection_id

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 240.0


def most_at_once(stack: LocalStack, runs: list[FlowRunInfo]) -> int:
    """The largest number of these runs that were running at the same moment."""
    moments = []
    for run in runs:
        body = httpx.get(f"{stack.api_url}/flow_runs/{run.id}", timeout=10).json()
        if body["start_time"] and body["end_time"]:
            moments.append((datetime.fromisoformat(body["start_time"]), 1))
            moments.append((datetime.fromisoformat(body["end_time"]), -1))
    running = peak = 0
    for _, step in sorted(moments):
        running += step
        peak = max(peak, running)
    return peak


def test_each_movie_is_processed_by_its_own_run(stack: LocalStack, tmp_path: Path) -> None:
    collection_id = next_collection_id()
    session = write_em_session(
        tmp_path / "GridSquare_1" / "Data", n_movies=3, n_frames=8, shape=(384, 384), seed=21
    )
    broken = session.directory / "FoilHole_1_Data_0004.mrc"  # the microscope still writing
    shutil.copy(session.movies[0].path, broken)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    parameters = session_parameters(session, ctf_tile=192, patches_x=2, patches_y=2)
    for movie in [*session.movie_paths, broken]:
        post_event(
            stack, em_event(CollectionEventKind.images_ready, collection_id, movie, parameters)
        )

    runs = wait_for_runs(stack, MOVIE_DEPLOYMENT, collection_id, 4, RUN_TIMEOUT_S)
    states = {Path(r.parameters["collection"]["data_files"][0]).name: r.state for r in runs}
    assert states == {
        "FoilHole_1_Data_0001.mrc": "COMPLETED",
        "FoilHole_1_Data_0002.mrc": "COMPLETED",
        "FoilHole_1_Data_0003.mrc": "COMPLETED",
        "FoilHole_1_Data_0004.mrc": "FAILED",
    }, stack.logs()
    # Never above the deployment's limit. How many overlap depends on timing: the SQLite
    # Prefect server turns a burst of events into runs about 2 s apart, about as long as
    # one of these small movies takes, so overlap itself is not asserted here.
    assert 1 <= most_at_once(stack, runs) <= 2
    deployment = httpx.get(f"{stack.api_url}/deployments/name/{MOVIE_DEPLOYMENT}", timeout=10)
    limit = deployment.json().get("global_concurrency_limit") or {}
    assert limit.get("limit") == 2

    lims = stack.lims
    jobs = lims.jobs_for_collection(collection_id)
    assert len(jobs) == 4 and all(j.recipe == "em-movie" and j.automatic for j in jobs)
    (failed,) = [j for j in jobs if j.program_status == "failed"]
    assert "FoilHole_1_Data_0004.mrc" in (failed.program_message or "")
    assert "not a complete MRC movie" in (failed.program_message or "")
    assert len(records.movies_for_collection(lims, collection_id)) == 4  # the broken one is listed

    results = records.em_results(lims, collection_id)
    assert len(results) == 3
    truth = {m.path.name: m for m in session.movies}
    for recorded in results:
        expected = truth[Path(recorded.movie.path).name]
        motion, ctf = recorded.result.motion, recorded.result.ctf
        assert np.abs(np.asarray(motion.drift) - expected.shifts).max() < 0.5
        assert ctf is not None
        assert 0.5 * (ctf.defocus_u + ctf.defocus_v) == pytest.approx(
            expected.ctf.mean_defocus, rel=0.02
        )
        assert Path(motion.micrograph_path).exists()

    shared = session.directory / "processing" / "em" / f"dc{collection_id}"
    for name in ("micrographs_ctf.star", "corrected_micrographs.star"):
        table = read_micrographs(shared / name)
        assert len(table) == 3, name  # one row per good movie

    post_event(
        stack, em_event(CollectionEventKind.finished, collection_id, session.movie_paths[-1])
    )
    (summary,) = wait_for_runs(stack, SUMMARY_DEPLOYMENT, collection_id, 1, RUN_TIMEOUT_S)
    assert summary.state == "COMPLETED", stack.logs()
    assert (shared / "session_histograms.png").stat().st_size > 1000

    # Reprocess the whole session with another dose: one new run per movie.
    cli_rerun(stack, collection_id, "dose_per_frame=2.0", timeout_s=RUN_TIMEOUT_S)
    runs = wait_for_runs(stack, MOVIE_DEPLOYMENT, collection_id, 9, RUN_TIMEOUT_S)
    assert sorted(r.state for r in runs).count("COMPLETED") == 7  # 3 + dispatcher + 3
    results = records.em_results(lims, collection_id)
    assert len(results) == 6
    by_movie: dict[int, set[int]] = {}
    for recorded in results:
        by_movie.setdefault(recorded.movie.movie_id, set()).add(recorded.program_id)
    assert all(len(programs) == 2 for programs in by_movie.values())
    reruns = [j for j in lims.jobs_for_collection(collection_id) if not j.automatic]
    assert len(reruns) == 4
    assert all(j.parameters["dose_per_frame"] == 2.0 for j in reruns)
    assert all(j.triggered_by == f"cli:{getpass.getuser()}" for j in reruns)
