"""The cryo-EM deployments: one run per movie under a concurrency limit, a session summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.deployments import (
    deployment_for_collection,
    load_runner_deployments,
    read_deployment_specs,
)
from prefect_beamline.events import CollectionEventKind
from prefect_beamline.flows.em import MOVIE_DEPLOYMENT, EMParameters
from tests.helpers import automatic_run_parameters, collection_event

PREFECT_YAML = Path(__file__).resolve().parents[3] / "prefect.yaml"


def test_em_movie_runs_per_movie_under_a_limit_and_summary_on_finished() -> None:
    specs = {s.name: s for s in read_deployment_specs(PREFECT_YAML)}
    movie, summary = specs["em-movie"], specs["em-session-summary"]
    assert movie.concurrency_limit == 2
    assert movie.triggers[0]["expect"] == ["beamline.collection.images_ready"]
    assert movie.triggers[0]["match"]["beamline.technique"] == "em"
    assert summary.triggers[0]["expect"] == ["beamline.collection.finished"]
    assert summary.triggers[0]["match"]["beamline.technique"] == "em"
    # a CLI rerun of an em collection goes to the per-movie deployment
    assert deployment_for_collection("em", "default", PREFECT_YAML) == "em-movie"
    deployments = {d.name: d for d in load_runner_deployments(PREFECT_YAML, ["em-movie"])}
    assert deployments["em-movie"].entrypoint == "prefect_beamline.flows.em.process_em_movie"
    # the session summary waits for the runs of this deployment, by flow and name
    assert f"{deployments['em-movie'].flow_name}/em-movie" == MOVIE_DEPLOYMENT


def test_announced_parameters_sit_under_the_runs_own() -> None:
    event = collection_event(
        4200,
        technique="em",
        kind=CollectionEventKind.images_ready,
        processing_parameters={"dose_per_frame": 1.3, "pixel_size_angstrom": 0.83},
    )
    chosen = automatic_run_parameters(EMParameters, event, EMParameters(dose_per_frame=2.0))
    assert (chosen.dose_per_frame, chosen.pixel_size_angstrom) == (2.0, 0.83)
    assert chosen.voltage_kv == 300 and chosen.cs_mm == 2.7 and chosen.amplitude_contrast == 0.1
    with pytest.raises(ValueError, match="dose_per_frame"):
        automatic_run_parameters(
            EMParameters, None, EMParameters.model_validate({"dose_per_frame": -1})
        )


def test_where_the_kernels_run_is_not_a_parameter() -> None:
    """Threads come from the Compute block: a rerun elsewhere asks for the same science."""
    compute = {"threads", "n_threads", "threads_per_chunk", "parallel_chunks", "dask_scheduler"}
    assert not compute & set(EMParameters.model_fields)
