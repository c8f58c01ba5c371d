"""The tomography flow's parameters, slice range and routing (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect_beamline.flows.tomo import ScanInfo, TomoParameters, effective_parameters, slice_range
from pydantic import ValidationError

from prefect_beamline.deployments import deployment_for_collection, read_deployment_specs
from prefect_beamline.events import CollectionEvent, CollectionEventKind, Technique

REPOSITORY = Path(__file__).resolve().parent.parent
SCAN = ScanInfo(
    path="/data/tomo_1.nxs",
    signature="tomo_1.nxs:1:1",
    layout="nxtomo",
    n_projections=180,
    n_rows=16,
    n_columns=128,
    angles_deg=[],
)


def announcement(**parameters: object) -> CollectionEvent:
    return CollectionEvent(
        event_id="e1",
        kind=CollectionEventKind.finished,
        technique=Technique.tomo,
        beamline="i13",
        visit="mg1-1",
        collection_id=3999,
        data_files=["/data/tomo_1.nxs"],
        processing_parameters=dict(parameters),
    )


def test_run_parameters_win_over_the_daq_and_defaults_fill_the_rest() -> None:
    chosen = effective_parameters(
        announcement(ring_filter=False, slices_per_chunk=4),
        TomoParameters(slices_per_chunk=2, centre_of_rotation=60.5),
    )
    assert (chosen.ring_filter, chosen.slices_per_chunk) == (False, 2)
    assert chosen.centre_of_rotation == 60.5 and chosen.filter_name == "ramp"


@pytest.mark.parametrize(
    "bad", [{"ring_filter_width": 8}, {"filter_name": "lanczos"}, {"first_slice": -1}]
)
def test_bad_parameters_are_refused_naming_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        TomoParameters.model_validate(bad)


def test_slice_range_defaults_to_every_row_and_honours_bounds() -> None:
    assert slice_range(SCAN, TomoParameters()) == (0, 16)
    assert slice_range(SCAN, TomoParameters(first_slice=3, last_slice=5)) == (3, 6)


@pytest.mark.parametrize("bounds", [{"first_slice": 5, "last_slice": 4}, {"last_slice": 16}])
def test_slice_range_outside_the_detector_names_the_file(bounds: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"rows 0\.\.15 \(/data/tomo_1.nxs\)"):
        slice_range(SCAN, TomoParameters.model_validate(bounds))


def test_any_tomo_collection_routes_to_the_reconstruction_deployment() -> None:
    assert deployment_for_collection("tomo", "default", REPOSITORY / "prefect.yaml") == (
        "tomo-reconstruction"
    )
    [spec] = [
        s for s in read_deployment_specs(REPOSITORY / "prefect.yaml") if s.name.startswith("tomo")
    ]
    assert spec.entrypoint == "prefect_beamline.flows.tomo:process_tomo"
    match = spec.triggers[0]["match"]
    assert match["beamline.technique"] == "tomo" and "beamline.experiment_type" not in match
    assert set(spec.triggers[0]["parameters"]) == {"collection_id", "collection", "triggered_by"}
