"""The MX flow's parameters and chunk cache key (no server needed): the DAQ chooses
science, never infrastructure."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from prefect_beamline.events import CollectionEvent
from prefect_beamline.flows.common import BAD_INPUT_ERRORS
from prefect_beamline.flows.mx import (
    MXParameters,
    find_spots_in_images,
    image_chunks,
    images_per_chunk,
)
from tests.helpers import automatic_run_parameters, cache_key, collection_event


def announcement(**parameters: object) -> CollectionEvent:
    return collection_event(1999, processing_parameters=parameters)


def test_run_parameters_win_over_the_daq_and_defaults_fill_the_rest() -> None:
    chosen = automatic_run_parameters(
        MXParameters,
        announcement(images_per_chunk=4, sigma_strong=4.0),
        MXParameters(sigma_strong=5.0),
    )
    assert (chosen.images_per_chunk, chosen.sigma_strong, chosen.gain) == (4, 5.0, 1.0)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1030, 1030), 38),  # Eiger2 1M: ~40 Mpixel per chunk, Prefect's cost near 5 %
        ((2162, 2068), 10),  # 4M and up keep 10-image chunks
        ((4362, 4148), 10),  # 16M (18 Mpixel)
        ((64, 64), 100),  # tiny frames: progress and retries stay fine-grained
    ],
)
def test_chunks_are_sized_by_the_frame_unless_set(shape: tuple[int, int], expected: int) -> None:
    assert images_per_chunk(MXParameters(), shape) == expected
    assert images_per_chunk(MXParameters(images_per_chunk=7), shape) == 7
    chunks = list(image_chunks(1, 3600, expected))
    assert chunks[0] == (1, expected) and chunks[-1][1] == 3600
    assert all(last - first + 1 <= expected for first, last in chunks)


@pytest.mark.parametrize(
    "infrastructure",
    [
        {"dask_scheduler": "tcp://attacker.example:8786"},
        {"compute_block": "cluster"},
        {"parallel_chunks": 64},
        {"threads_per_chunk": 64},
        {"slurm": {"queue": "debug", "maximum_jobs": 100}},
        {"queue": "debug"},
    ],
)
def test_a_daq_naming_compute_is_refused_as_bad_input(infrastructure: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(infrastructure))) as refused:
        automatic_run_parameters(MXParameters, announcement(**infrastructure), None)
    assert isinstance(refused.value, BAD_INPUT_ERRORS)  # failed at once, never retried


def chunk_key(**changes: Any) -> str | None:
    inputs = {
        "master_file": "/data/xtal_1_master.h5",
        "signature": "xtal_1_master.h5:1:1",
        "first": 1,
        "last": 10,
        "parameters": MXParameters(),
        "n_threads": 1,
        **changes,
    }
    return cache_key(find_spots_in_images, inputs)


def test_kernel_threads_are_not_part_of_a_chunks_cache_key() -> None:
    assert chunk_key(n_threads=8) == chunk_key()
    assert chunk_key(parameters=MXParameters(sigma_strong=4.0)) != chunk_key()
