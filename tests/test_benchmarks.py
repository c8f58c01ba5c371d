"""The benchmark entry point runs and reports what the issues ask for (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_spotfind_benchmark_reports_every_number_and_agrees_with_reference() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "spotfind", "--quick", "--json"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("kernel_ms_1t", "kernel_ms_all", "reference_ms", "memory_pass_ms"):
        assert result[key] > 0
    assert result["kernel_equals_reference"] is True


def test_em_benchmark_reports_steps_and_memory_pass() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "em", "--quick", "--json"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["per_movie_s"] > 0 and result["memory_pass_ms"] > 0
    assert {"bin", "motion", "sum", "dose_weight", "ctf"} <= set(result["steps"])
    assert result["max_shift_error_px"] < 0.5
