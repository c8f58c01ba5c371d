"""The tomography flow's parameters, slice range, chunk cache key and routing (no server
needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_beamline.deployments import deployment_for_collection, read_deployment_specs
from prefect_beamline.events import CollectionEvent
from prefect_beamline.flows.tomo import TomoParameters, reconstruct_rows, slice_range
from prefect_beamline.techniques.tomo.analysis import ScanInfo
from prefect_beamline.techniques.tomo.report import summary_table
from prefect_beamline.techniques.tomo.staging import StagedRows
from tests.helpers import automatic_run_parameters, cache_key, collection_event

REPOSITORY = Path(__file__).resolve().parents[3]
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
    return collection_event(3999, technique="tomo", processing_parameters=parameters)


def test_run_parameters_win_over_the_daq_and_defaults_fill_the_rest() -> None:
    chosen = automatic_run_parameters(
        TomoParameters,
        announcement(ring_filter=False, slices_per_chunk=4),
        TomoParameters(slices_per_chunk=2, centre_of_rotation=60.5),
    )
    assert (chosen.ring_filter, chosen.slices_per_chunk) == (False, 2)
    assert chosen.centre_of_rotation == 60.5 and chosen.filter_name == "ramp"


@pytest.mark.parametrize(
    "bad",
    [
        {"ring_filter_width": 8},
        {"filter_name": "lanczos"},
        {"first_slice": -1},
        # Infrastructure is the Compute block's: the DAQ cannot choose it.
        {"dask_scheduler": "tcp://attacker.example:8786"},
        {"parallel_chunks": 1},
    ],
)
def test_bad_parameters_are_refused_naming_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        TomoParameters.model_validate(bad)


def chunk_key(**changes: Any) -> str | None:
    inputs = {
        "scan_file": SCAN.path,
        "signature": SCAN.signature,
        "first_row": 0,
        "stop_row": 8,
        "centre": 63.5,
        "parameters": TomoParameters(),
        "n_threads": 1,
        **changes,
    }
    return cache_key(reconstruct_rows, inputs)


def test_kernel_threads_are_not_part_of_a_chunks_cache_key() -> None:
    assert chunk_key(n_threads=8) == chunk_key()
    assert chunk_key(centre=64.0) != chunk_key()


def test_where_a_chunk_reads_its_rows_is_not_part_of_its_cache_key_but_the_method_is() -> None:
    staged = StagedRows(path="/elsewhere/job-2/sinograms.h5", first_row=0)
    assert chunk_key(staged=staged) == chunk_key()
    assert chunk_key(parameters=TomoParameters(method="fbp")) != chunk_key()


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


def test_summary_table_reads_with_units_and_rounded_numbers() -> None:
    summary = {
        "n_projections": 181,
        "shape": [8, 64, 64],
        "slice_range": [0, 7],
        "centre_of_rotation": 31.987654321,
        "ring_filter": True,
        "new_key": 1.5,
    }
    assert summary_table(summary) == [
        {"quantity": "projections", "value": "181"},
        {"quantity": "volume (z × y × x voxels)", "value": "8 × 64 × 64"},
        {"quantity": "detector rows reconstructed", "value": "0–7"},
        {"quantity": "centre of rotation (px)", "value": "31.99"},
        {"quantity": "ring filter", "value": "on"},
        {"quantity": "new_key", "value": "1.5"},
    ]
