"""ePIE/rPIE on a synthetic scan recover the known object phase; checkpoints resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_beamline.flows.ptycho import PtychoParameters
from prefect_beamline.techniques.ptycho.reconstruct import (
    checkpoint_key,
    reconstruct_scan,
    starting_probe,
)
from prefect_beamline.techniques.ptycho.results_file import CHECKPOINT_FILE, read_reconstruction
from prefect_beamline.techniques.ptycho.synth import SyntheticScan, write_ptycho_scan
from tests.techniques.ptycho.metrics import is_decreasing

# Normalised RMSE of the object phase inside the scanned area, after removing the global
# phase offset and the sub-pixel shift: RMS(phase error) / (max - min of the true phase).
MAX_PHASE_NRMSE = 0.1


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScan:
    return write_ptycho_scan(tmp_path_factory.mktemp("ptycho"), n_positions=100, seed=1)


def score(scan: SyntheticScan, reconstruction_file: str) -> float:
    return scan.phase_nrmse(read_reconstruction(Path(reconstruction_file)).obj)


@pytest.mark.parametrize("algorithm", ["epie", "rpie"])
def test_reconstruction_recovers_the_phase_and_the_error_decreases(
    scan: SyntheticScan, tmp_path: Path, algorithm: str
) -> None:
    parameters = PtychoParameters(
        iterations=60, algorithm=algorithm, alpha=1.0 if algorithm == "epie" else 0.2
    )
    summary = reconstruct_scan(str(scan.scan_file), tmp_path, parameters)
    nrmse = score(scan, summary.reconstruction_file)
    print(
        f"{algorithm}: phase NRMSE {nrmse:.4f}, "
        f"error {summary.first_error:.3g} -> {summary.final_error:.3g}"
    )
    assert nrmse <= MAX_PHASE_NRMSE
    saved = read_reconstruction(Path(summary.reconstruction_file))
    errors = saved.errors
    assert len(errors) == 60 and is_decreasing(errors)
    assert saved.positions_px is not None
    np.testing.assert_array_equal(saved.positions_px, scan.positions_px)
    assert summary.final_error < 0.1 * summary.first_error
    assert summary.n_positions == 100 and summary.object_shape == scan.object_true.shape


def test_a_crash_after_a_checkpoint_resumes_there_not_at_iteration_zero(
    scan: SyntheticScan, tmp_path: Path
) -> None:
    """What a task retry or a retried flow run does: the first attempt dies (an
    infrastructure error raised right after the checkpoint at iteration 20); the second
    attempt, same folder and parameters, starts at 20 and still converges."""
    parameters = PtychoParameters(iterations=60, iterations_per_checkpoint=20)

    def crash(state: object) -> None:
        raise ConnectionError("worker lost")

    with pytest.raises(ConnectionError):
        reconstruct_scan(str(scan.scan_file), tmp_path, parameters, on_block=crash)
    assert read_reconstruction(tmp_path / CHECKPOINT_FILE).iteration == 20

    summary = reconstruct_scan(str(scan.scan_file), tmp_path, parameters)
    assert summary.resumed_from_iteration == 20
    assert summary.iterations == 60
    assert len(read_reconstruction(Path(summary.reconstruction_file)).errors) == 60
    assert score(scan, summary.reconstruction_file) <= MAX_PHASE_NRMSE


def test_a_checkpoint_of_other_parameters_is_not_resumed(
    scan: SyntheticScan, tmp_path: Path
) -> None:
    reconstruct_scan(
        str(scan.scan_file), tmp_path, PtychoParameters(iterations=5, iterations_per_checkpoint=5)
    )
    other = reconstruct_scan(
        str(scan.scan_file), tmp_path, PtychoParameters(iterations=5, algorithm="rpie", alpha=0.2)
    )
    assert other.resumed_from_iteration == 0


def test_where_it_runs_is_not_part_of_the_checkpoint_key(scan: SyntheticScan) -> None:
    """Threads come from the Compute block, outside the key: a retry elsewhere resumes."""
    assert "threads" not in PtychoParameters.model_fields
    settings = PtychoParameters(iterations=5)
    key = checkpoint_key(settings, str(scan.scan_file), None)
    assert checkpoint_key(PtychoParameters(iterations=500), str(scan.scan_file), None) == key
    rpie = PtychoParameters(iterations=5, algorithm="rpie", alpha=0.2)
    assert checkpoint_key(rpie, str(scan.scan_file), None) != key


def test_a_retry_on_more_threads_resumes_the_checkpoint(
    scan: SyntheticScan, tmp_path: Path
) -> None:
    parameters = PtychoParameters(iterations=4, iterations_per_checkpoint=2)

    def crash(state: object) -> None:
        raise ConnectionError("worker lost")

    with pytest.raises(ConnectionError):
        reconstruct_scan(str(scan.scan_file), tmp_path, parameters, on_block=crash, n_threads=1)
    again = reconstruct_scan(str(scan.scan_file), tmp_path, parameters, n_threads=2)
    assert again.resumed_from_iteration == 2 and again.iterations == 4


def test_a_probe_from_an_earlier_run_starts_closer(scan: SyntheticScan, tmp_path: Path) -> None:
    first = reconstruct_scan(
        str(scan.scan_file), tmp_path / "first", PtychoParameters(iterations=30)
    )
    again = reconstruct_scan(
        str(scan.scan_file),
        tmp_path / "again",
        PtychoParameters(iterations=3),
        probe_file=first.reconstruction_file,
    )
    fresh = reconstruct_scan(
        str(scan.scan_file), tmp_path / "fresh", PtychoParameters(iterations=3)
    )
    # After 3 iterations the known probe has done what a fresh guess needs many more for.
    assert again.final_error < 0.2 * fresh.final_error


def test_spiral_scan_also_reconstructs(tmp_path: Path) -> None:
    spiral = write_ptycho_scan(tmp_path / "data", n_positions=100, pattern="spiral", seed=2)
    summary = reconstruct_scan(
        str(spiral.scan_file), tmp_path / "out", PtychoParameters(iterations=60)
    )
    assert score(spiral, summary.reconstruction_file) <= MAX_PHASE_NRMSE


def test_synthetic_truth_is_consistent(scan: SyntheticScan) -> None:
    phase = np.angle(scan.object_true)
    assert 0.9 < phase.max() - phase.min() < 1.3  # no wrapping: max_phase_rad 1.2
    assert scan.valid.sum() < scan.valid.size  # beamstop and dead pixels masked


def test_probe_modes_and_subpixel_positions_reconstruct_and_resume(
    scan: SyntheticScan, tmp_path: Path
) -> None:
    """Two probe modes on sub-pixel (here near-integer) positions: the checkpoint keeps
    both modes, a retry resumes from it, and the phase is still recovered."""
    parameters = PtychoParameters(
        iterations=40, iterations_per_checkpoint=20, probe_modes=2, subpixel_positions=True
    )
    default_key = checkpoint_key(PtychoParameters(iterations=40), str(scan.scan_file), None)
    assert checkpoint_key(parameters, str(scan.scan_file), None) != default_key

    def crash(state: object) -> None:
        raise ConnectionError("worker lost")

    with pytest.raises(ConnectionError):
        reconstruct_scan(str(scan.scan_file), tmp_path, parameters, on_block=crash)
    checkpoint = read_reconstruction(tmp_path / CHECKPOINT_FILE)
    assert checkpoint.probe_modes is not None and checkpoint.probe_modes.shape[0] == 2
    summary = reconstruct_scan(str(scan.scan_file), tmp_path, parameters)
    assert summary.resumed_from_iteration == 20 and summary.iterations == 40
    saved = read_reconstruction(Path(summary.reconstruction_file))
    assert saved.probe_modes is not None
    np.testing.assert_array_equal(saved.probe, saved.probe_modes[0])
    # The second mode carries little power: the synthetic probe is fully coherent.
    powers = np.sum(np.abs(saved.probe_modes) ** 2, axis=(1, 2))
    assert powers[1] < 0.2 * powers[0]
    assert saved.positions_px is not None
    np.testing.assert_allclose(saved.positions_px, scan.positions_px, atol=1e-6)
    ny, nx = scan.object_true.shape
    assert saved.obj.shape == (ny + 1, nx + 1)
    assert scan.phase_nrmse(saved.obj[:ny, :nx]) <= MAX_PHASE_NRMSE
    # probe_from this run: its modes when as many are asked, else modes made from mode 0.
    unused = np.zeros(saved.probe.shape, np.float32), np.ones(saved.probe.shape, bool)
    again = starting_probe(summary.reconstruction_file, saved.probe.shape, *unused, modes=2)
    np.testing.assert_array_equal(again, saved.probe_modes)
    three = starting_probe(summary.reconstruction_file, saved.probe.shape, *unused, modes=3)
    assert three.shape == (3, *saved.probe.shape)
