"""One ePIE iteration over a realistic scan: 1000 positions of 256 x 256 patterns.

Timed on the same synthetic data and starting guess: our driver (Cython kernels, scipy.fft)
on 1 thread and on all cores; the plain numpy implementation of the same update
(tests/ptycho_reference.py, numpy.fft, one thread); and, when `ptychi` is importable,
Pty-Chi's EPIE on CPU torch with batch size 1 (the same sequential update) and with its
default mini-batch of 100 (a different, parallel update). Median of a few iterations after
a warm-up one. Target (issue 5): faster than numpy and Pty-Chi.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prefect_beamline.techniques.ptycho.analysis import (
    Reconstruction,
    epie_iteration,
    initial_probe,
    object_grid_shape,
    position_order,
    total_measured_power,
)
from prefect_beamline.techniques.ptycho.synth import make_probe, resolution_pattern, scan_positions
from tests.kernels.epie_reference import reference_iteration

FULL = {"n_positions": 1000, "pattern_size": 256, "probe_sigma_px": 28.0, "step_px": 24.0}
# Pty-Chi's default mini-batch: positions updated together (not sequential ePIE).
PTYCHI_BATCH = 100
QUICK = {"n_positions": 64, "pattern_size": 64, "probe_sigma_px": 7.0, "step_px": 6.0}


def realistic_scan(
    n_positions: int, pattern_size: int, probe_sigma_px: float, step_px: float, seed: int = 0
) -> dict[str, Any]:
    """Far-field amplitudes (FFT order), mask, positions and a starting probe, in memory."""
    rng = np.random.default_rng(seed)
    n = pattern_size
    positions = scan_positions(n_positions, step_px, "raster", rng)
    shape = object_grid_shape(positions, (n, n))
    amplitude, phase = resolution_pattern(shape, rng)
    obj = ((1.0 - 0.5 * amplitude) * np.exp(1.2j * phase)).astype(np.complex64)
    probe = make_probe(n, probe_sigma_px, 2.5) * np.float32(100.0)
    amplitudes = np.empty((n_positions, n, n), dtype=np.float32)
    for index, (row, col) in enumerate(positions):
        far_field = np.fft.fft2(probe * obj[row : row + n, col : col + n], norm="ortho")
        amplitudes[index] = np.sqrt(rng.poisson(np.abs(far_field) ** 2))
    valid = np.ones((n, n), dtype=bool)
    valid[:2, :2] = valid[-2:, :2] = valid[:2, -2:] = valid[-2:, -2:] = False  # beamstop
    amplitudes[:, ~valid] = 0.0
    return {
        "amplitudes": amplitudes,
        "valid": valid,
        "positions": positions,
        "object_shape": shape,
        "probe": initial_probe(amplitudes.mean(axis=0), valid),
    }


def median_s(step: Callable[[], object], repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of `repeats` calls after one warm-up call.

    The CPU time counts every thread of this process: on a machine shared with other
    work it is the steadier of the two for single-threaded code.
    """
    if warm_up:
        step()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def ours(scan: dict[str, Any], threads: int) -> Callable[[], object]:
    state = Reconstruction(np.ones(scan["object_shape"], np.complex64), scan["probe"].copy())
    power = total_measured_power(scan["amplitudes"], scan["valid"])

    def step() -> object:
        return epie_iteration(
            state,
            scan["amplitudes"],
            scan["valid"],
            scan["positions"],
            n_threads=threads,
            measured_power=power,
        )

    return step


def plain_numpy(scan: dict[str, Any]) -> Callable[[], object]:
    obj = np.ones(scan["object_shape"], np.complex64)
    probe = scan["probe"].copy()
    order = position_order(len(scan["positions"]), 0)

    def step() -> object:
        return reference_iteration(
            obj, probe, scan["amplitudes"], scan["valid"], scan["positions"], order
        )

    return step


def _stub_torchvision_if_broken() -> None:
    """Pty-Chi imports only `torchvision.transforms.GaussianBlur` (unused by ePIE). The
    only torchvision wheel here is a CUDA build whose extension cannot load beside the CPU
    torch; then a stub that fails if GaussianBlur is ever called stands in for it."""
    import importlib
    import sys
    import types

    try:
        importlib.import_module("torchvision.transforms")
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]

        class UnusableGaussianBlur:
            def __init__(self, *args: object, **kwargs: object) -> None:
                raise RuntimeError("torchvision is not usable here (CUDA build, CPU torch)")

        transforms = types.ModuleType("torchvision.transforms")
        transforms.GaussianBlur = UnusableGaussianBlur  # type: ignore[attr-defined]
        package = types.ModuleType("torchvision")
        package.transforms = transforms  # type: ignore[attr-defined]
        sys.modules["torchvision"] = package
        sys.modules["torchvision.transforms"] = transforms


def ptychi_step(
    scan: dict[str, Any], batch_size: int = 1
) -> tuple[Callable[[], object] | None, str | None]:
    """One Pty-Chi ePIE epoch on CPU with the same data, or None and why not."""
    try:
        import torch

        _stub_torchvision_if_broken()
        import ptychi.api as api
        from ptychi.api.task import PtychographyTask
    except ImportError as error:
        return None, f"ptychi is not importable here ({error}); pip install ptychi (CPU torch)"
    n = scan["probe"].shape[0]
    margin = 8
    ny, nx = scan["object_shape"]
    # Pty-Chi takes detector-order intensities, probe-centre positions and (slices, h, w).
    intensities = np.fft.fftshift(scan["amplitudes"] ** 2, axes=(-2, -1))
    centres = scan["positions"] + n / 2.0
    centres = centres - centres.mean(axis=0)
    options = api.EPIEOptions()
    options.data_options.data = intensities
    options.data_options.valid_pixel_mask = np.fft.fftshift(scan["valid"])
    options.data_options.wavelength_m = 2e-10
    options.object_options.initial_guess = np.ones(
        (1, ny + 2 * margin, nx + 2 * margin), np.complex64
    )
    options.object_options.pixel_size_m = 1e-8
    options.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.POSITIONS
    )
    options.object_options.optimizable = True
    options.object_options.alpha = 1.0
    options.probe_options.initial_guess = scan["probe"][None, None].copy()
    options.probe_options.optimizable = True
    options.probe_options.alpha = 1.0
    options.probe_position_options.position_y_px = centres[:, 0]
    options.probe_position_options.position_x_px = centres[:, 1]
    options.probe_position_options.optimizable = False
    options.reconstructor_options.batch_size = batch_size
    options.reconstructor_options.num_epochs = 1
    options.reconstructor_options.default_device = api.Devices.CPU
    torch.set_num_threads(os.cpu_count() or 1)
    task = PtychographyTask(options)

    def step() -> object:
        task.run(1)
        return None

    return step, None


def run(quick: bool = False) -> dict[str, Any]:
    size = QUICK if quick else FULL
    repeats = 3
    scan = realistic_scan(**size)  # type: ignore[arg-type]
    threads = os.cpu_count() or 1
    wall_1t, cpu_1t = median_s(ours(scan, 1), repeats)
    numpy_wall, numpy_cpu = median_s(plain_numpy(scan), repeats)
    wall_all, _ = median_s(ours(scan, threads), repeats)
    result: dict[str, Any] = {
        "n_positions": size["n_positions"],
        "pattern_size": size["pattern_size"],
        "iteration_s": wall_1t,
        "iteration_cpu_s": cpu_1t,
        "iteration_s_all_threads": wall_all,
        "threads": threads,
        "numpy_iteration_s": numpy_wall,
        "numpy_iteration_cpu_s": numpy_cpu,
        "ptychi_iteration_s": None,
        "ptychi_note": None,
        "ptychi_batched_iteration_s": None,
        "ptychi_batch_size": PTYCHI_BATCH,
    }
    try:
        step, reason = ptychi_step(scan)
        if step is None:
            result["ptychi_note"] = reason
        else:
            # One epoch, no warm-up: at batch size 1 an epoch of the full scan takes minutes.
            result["ptychi_iteration_s"] = median_s(step, 1, warm_up=False)[0]
            result["ptychi_note"] = "Pty-Chi EPIE, CPU torch, batch_size 1, all threads"
            batched, _ = ptychi_step(scan, batch_size=PTYCHI_BATCH)
            assert batched is not None
            result["ptychi_batched_iteration_s"] = median_s(batched, 1)[0]
    except Exception as error:  # a peer that breaks must not hide our numbers
        result["ptychi_note"] = f"Pty-Chi failed: {type(error).__name__}: {error}"
    result["speedup_vs_numpy"] = numpy_wall / wall_1t
    result["cpu_speedup_vs_numpy"] = numpy_cpu / cpu_1t
    if result["ptychi_iteration_s"]:
        result["speedup_vs_ptychi"] = result["ptychi_iteration_s"] / min(wall_1t, wall_all)
    result["load_average"] = os.getloadavg()
    return result


def report(result: dict[str, Any]) -> str:
    ptychi = result["ptychi_iteration_s"]
    lines = [
        f"ePIE, one iteration over {result['n_positions']} positions of "
        f"{result['pattern_size']}x{result['pattern_size']} patterns "
        f"(load average {result['load_average'][0]:.2f}):",
        f"  Cython kernels + scipy.fft, 1 thread   {result['iteration_s']:8.3f} s",
        f"  Cython kernels + scipy.fft, {result['threads']} threads  "
        f"{result['iteration_s_all_threads']:8.3f} s",
        f"  plain numpy (same update)              {result['numpy_iteration_s']:8.3f} s "
        f"({result['speedup_vs_numpy']:.1f}x ours on 1 thread; CPU time "
        f"{result['cpu_speedup_vs_numpy']:.1f}x)",
        "  Pty-Chi (CPU)                          "
        + (f"{ptychi:8.3f} s" if ptychi else "   n/a")
        + f"  {result['ptychi_note']}",
    ]
    if result.get("ptychi_batched_iteration_s"):
        lines.append(
            f"  Pty-Chi (CPU), batch {result['ptychi_batch_size']} (not sequential)   "
            f"{result['ptychi_batched_iteration_s']:8.3f} s"
        )
    return "\n".join(lines)
