"""The benchmark entry point runs and reports what the issues ask for (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def run_quick(name: str) -> dict[str, Any]:
    """`benchmarks/run.py NAME --quick --json`, as a user runs it; its JSON result."""
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", name, "--quick", "--json"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_spotfind_benchmark_reports_every_number_and_agrees_with_reference() -> None:
    result = run_quick("spotfind")
    for key in ("kernel_ms_1t", "kernel_ms_all", "reference_ms", "memory_pass_ms"):
        assert result[key] > 0
    assert result["kernel_equals_reference"] is True
    assert result["n_overloads"] == 20 and result["kernel_masking_ms_1t_interleaved"] > 0


def test_tomo_benchmark_reports_every_number_and_agrees_with_iradon() -> None:
    result = run_quick("tomo")
    for key in (
        "kernel_ms_1t", "kernel_ms_all", "iradon_ms", "memory_pass_ms", "fourier_ms_1t",
        "fourier_ms_all",
    ):  # fmt: skip
        assert result[key] > 0
    assert result["relative_difference_vs_iradon"] < 1e-5
    # The Fourier method's quality target, against the phantom.
    assert 0 < result["fourier_nrmse_vs_phantom"] <= result["iradon_nrmse_vs_phantom"] + 0.005
    assert result["fbp_nrmse_vs_phantom"] > 0
    # The peers (algotom, astra-toolbox: the `tomo-peers` extra) where they are installed.
    assert result["peer_name"] is None or result["peer_ms"] > 0


def test_ptycho_benchmark_reports_ours_its_fft_floor_numpy_and_ptychi_or_why_not() -> None:
    result = run_quick("ptycho")
    assert result["iteration_s"] > 0 and result["numpy_iteration_s"] > 0
    assert result["iteration_s_all_threads"] > 0
    assert result["fft_floor_s"] > 0 and result["fft_floor_s_all_threads"] > 0
    assert result["iteration_over_fft_floor"] == pytest.approx(
        result["iteration_s"] / result["fft_floor_s"]
    )
    if result["ptychi_batched_iteration_s"] is None:
        assert result["ptychi_note"]  # the reason it was not timed
    else:
        assert result["ptychi_batched_iteration_s"] > 0


def test_em_benchmark_reports_steps_and_memory_pass() -> None:
    result = run_quick("em")
    assert result["per_movie_s"] > 0 and result["memory_pass_ms"] > 0
    assert {"bin", "motion", "sum", "dose_weight", "ctf"} <= set(result["steps"])
    # Every step beside its floor, measured in the same run.
    assert set(result["floors"]) == {"bin", "motion", "sum", "dose_weight", "ctf"}
    assert all(seconds > 0 for seconds in result["floors"].values())
    assert set(result["steps_over_floor"]) == set(result["floors"])
    assert result["max_shift_error_px"] < 0.5


@pytest.mark.parametrize(
    ("name", "agreement"),
    [
        ("tomo_preprocess", ("normalise_max_abs_difference", 1e-5)),
        ("backproject", ("relative_difference_vs_reference", 1e-5)),
        ("motioncor", ("max_abs_difference_vs_reference", 1e-4)),
        ("powerspec", ("max_relative_difference_of_sums", 1e-6)),
    ],
)
def test_kernel_benchmark_times_kernel_reference_and_memory_pass(
    name: str, agreement: tuple[str, float]
) -> None:
    result = run_quick(name)
    timings = {key: value for key, value in result.items() if key.endswith("_ms")}
    assert "memory_pass_ms" in timings and any("reference" in key for key in timings)
    assert all(value > 0 for value in timings.values()), timings
    key, tolerance = agreement
    assert result[key] < tolerance


def test_slurm_benchmark_reports_what_a_slurm_run_pays_or_why_not() -> None:
    result = run_quick("slurm")
    if "skipped" in result:  # no Slurm on this machine: fine only where none is expected
        assert os.environ.get("PREFECT_BEAMLINE_TEST_SLURM") != "1", result["skipped"]
        return
    assert result["slurm_first_result_s"] > 0 and result["local_first_result_s"] > 0
    assert result["slurm_task_round_trip_ms"] > 0


def test_gateway_benchmark_reports_throughput_integrity_lag_and_the_zocalo_peer() -> None:
    result = run_quick("gateway")
    assert result["accepted_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["burst_accepted"] == result["burst_events"]
    assert result["burst_lost"] == 0 and result["burst_duplicated"] == 0
    assert result["burst_in_prefect"] == result["burst_accepted"]
    assert result["drain_lag_s"] is not None and result["drain_lag_s"] >= 0
    assert len(result["load_avg"]) == 2
    if result["zocalo_per_s"] is None:
        assert result["zocalo_note"]  # the reason it was not measured
    else:
        assert result["zocalo_per_s"] > 0


def test_ssx_benchmark_reports_every_number_and_agrees_with_pyfai_and_reference() -> None:
    result = run_quick("ssx")
    (size,) = result["sizes"].values()
    for key in (
        "integrate_ms_1t",
        "integrate_ms_all",
        "pyfai_ms",
        "memory_pass_ms",
        "hitfind_ms_1t",
        "hitfind_ms_all",
        "reference_hitfind_ms",
    ):
        assert size[key] > 0
    assert size["max_rel_diff_vs_pyfai"] < 1e-4
    assert size["reference_equals_kernel_n_peaks"] is True


def test_eer_benchmark_reports_kernel_peer_and_floor_and_agrees_with_the_peer() -> None:
    result = run_quick("eer")
    for key in ("kernel_ms_1t", "peer_ms_1t", "floor_ms"):
        assert result[key] > 0
    assert result["kernel_equals_peer"] is True


def test_live_benchmark_reports_the_issue_keys_and_loses_no_result() -> None:
    result = run_quick("live")
    for key in (
        "frames_per_s_per_core",
        "kernel_ms_per_frame",
        "path_over_kernel",
        "p50_latency_s",
        "p95_latency_s",
        "centre_after_last_frame_s",
    ):
        assert result[key] is not None and result[key] > 0, key
    assert result["results_received"] == result["frames_sent"]  # every frame's result
    assert result["decoder_equals_frames"] is True
