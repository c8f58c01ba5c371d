"""How many collection runs one machine holds at once: from memory and frame size."""

from __future__ import annotations

import pytest

from prefect_beamline.capacity import (
    FIXED_RUN_BYTES,
    run_bytes,
    runner_limit,
    runs_that_fit,
    runs_the_cores_keep_busy,
)
from prefect_beamline.ext.arguments import available_cores

GIB = 2**30


def test_the_estimate_matches_what_issue_17_measured() -> None:
    # 259-278 MB at 1.1 Mpixel, 552 MB at 16 Mpixel, both with two chunks at once.
    assert 259e6 <= run_bytes(1_100_000, 2) <= 330e6
    assert 520e6 <= run_bytes(16_000_000, 2) <= 620e6


def test_big_frames_fit_fewer_runs_than_small_ones() -> None:
    small = runs_that_fit(1_100_000, 2, memory_fraction=0.5, available_bytes=8 * GIB)
    big = runs_that_fit(18_100_000, 2, memory_fraction=0.5, available_bytes=8 * GIB)
    assert big < small
    assert big * run_bytes(18_100_000, 2) <= 4 * GIB


def test_an_operators_count_only_lowers_the_bound() -> None:
    assert (
        runs_that_fit(1_000_000, 2, memory_fraction=1, count_limit=3, available_bytes=64 * GIB) == 3
    )
    assert (
        runs_that_fit(18_100_000, 2, memory_fraction=0.5, count_limit=50, available_bytes=4 * GIB)
        < 50
    )


def test_at_least_one_run_always_fits() -> None:
    assert runs_that_fit(18_100_000, 8, memory_fraction=0.1, available_bytes=FIXED_RUN_BYTES) == 1


@pytest.mark.parametrize("fraction", [0, 1.5, -0.2])
def test_a_memory_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="memory_fraction"):
        runs_that_fit(1_000_000, 2, memory_fraction=fraction, available_bytes=GIB)


def test_runs_are_bounded_by_the_cores_too() -> None:
    assert runs_the_cores_keep_busy(2, 4) == 8
    assert runs_the_cores_keep_busy(64, 4) == 256
    assert runs_the_cores_keep_busy(1, 1) == 1


def test_serve_takes_the_smaller_of_the_memory_and_the_cores_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_BEAMLINE_COMPUTE_BLOCK", raising=False)
    monkeypatch.setenv("PREFECT_BEAMLINE_RUNS_PER_CORE", "1")
    assert runner_limit(None) == min(available_cores(), runner_limit_by_memory())
    monkeypatch.setenv("PREFECT_BEAMLINE_RUNS_PER_CORE", "1000")
    assert runner_limit(None) == runner_limit_by_memory()
    assert runner_limit(1) == 1


def runner_limit_by_memory() -> int:
    from prefect_beamline.settings import get_settings

    settings = get_settings()
    return runs_that_fit(settings.max_frame_pixels, 2, memory_fraction=settings.run_memory_fraction)
