"""One ePIE iteration over a realistic scan: 1000 positions of 256 x 256 patterns.

Timed on the same synthetic data and starting guess, the sides interleaved (each round
runs every side once; medians of the rounds, after a warm-up round; the one-thread
sides in rounds of their own, then the all-thread ones): our driver (one
Cython kernel call per iteration: the fused block pass, FFTW's row and column plans
run from C) on 1 thread and on all cores; the same row and column FFTs alone
(`block_fft_floor_s`); the previous path (whole-array 2-D FFTW plans called back from
the kernel, three passes between them: `iteration_s_2d_plan`); the floor, the
iteration's 2 whole-array 2-D FFTs per position alone with FFTW through pyFFTW,
planned FFTW_MEASURE, in place, same threads (`fft_floor_s`); the plain numpy
implementation of the same update (tests/kernels/epie_reference.py, numpy.fft, one
thread); and, when `ptychi` is importable, Pty-Chi's EPIE on CPU torch at its default
mini-batch of 100 (a different, parallel update). Targets (issue 15): `iteration_s`
<= 1.5 x `fft_floor_s`, >= 5x numpy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prefect_beamline.ext.epie import block_fft_pairs
from prefect_beamline.techniques.ptycho.analysis import (
    Reconstruction,
    epie_iteration,
    initial_probe,
    object_grid_shape,
    plan_iteration_fft,
    position_order,
    total_measured_power,
)
from prefect_beamline.techniques.ptycho.fft import BlockFFT, InPlaceFFT2, plan_block_fft, plan_fft2
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


def ours(scan: dict[str, Any], threads: int, fft: BlockFFT | InPlaceFFT2) -> Callable[[], object]:
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
            fft=fft,
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


def fft_floor(scan: dict[str, Any], fft: InPlaceFFT2) -> Callable[[], object]:
    """The iteration's FFTs alone: two per position, same library, plan and buffer."""
    fft.buffer[...] = scan["probe"]
    n_positions = len(scan["positions"])

    def step() -> object:
        for index in range(n_positions):
            fft.forward()
            fft.backward()
            # An unnormalised round trip multiplies by N; rescaling keeps the values
            # finite (a multiply per pixel every 4 round trips: under 2 % of an FFT).
            if index % 4 == 3:
                fft.buffer *= np.float32(fft.buffer.size**-4.0)
        return None

    return step


def block_fft_floor(scan: dict[str, Any], fft: BlockFFT) -> Callable[[], object]:
    """The fused pass's FFTs alone: its row and column plans, block by block, 2 per position."""
    n = scan["probe"].shape[1]
    buffer = fft.buffer
    buffer[0, :, :n] = scan["probe"]
    n_positions = len(scan["positions"])

    def step() -> object:
        for _ in range(n_positions // 4):
            block_fft_pairs(fft, n, 4)
            np.multiply(buffer, np.float32(float(n) ** -8.0), out=buffer)  # keeps it finite
        block_fft_pairs(fft, n, n_positions % 4)
        return None

    return step


def interleaved(
    steps: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each step, the steps run in turn `repeats` times
    after one warm-up round: every side sees the same load."""
    for step in steps.values():
        step()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (
            statistics.median(wall for wall, _ in times),
            statistics.median(cpu for _, cpu in times),
        )
        for name, times in samples.items()
    }


def run(quick: bool = False) -> dict[str, Any]:
    size = QUICK if quick else FULL
    repeats = 3 if quick else 5
    scan = realistic_scan(**size)  # type: ignore[arg-type]
    threads = os.cpu_count() or 1
    shape = scan["probe"].shape
    load_before = os.getloadavg()
    fft_1t, fft_all = plan_iteration_fft(shape, 1), plan_iteration_fft(shape, threads)
    # One-thread sides and all-thread sides in rounds of their own: the worker threads
    # of a threaded side spin on after it, and would land on whichever side came next
    # (in its wall time, and in its CPU time: they belong to this process).
    times = interleaved(
        {
            "ours_1t": ours(scan, 1, fft_1t),
            "floor_1t": fft_floor(scan, plan_fft2(shape, 1)),
            "numpy": plain_numpy(scan),
            "ours_2d_1t": ours(scan, 1, plan_fft2(shape, 1)),
            "block_floor_1t": block_fft_floor(scan, plan_block_fft(shape)),
        },
        repeats,
    )
    times |= interleaved(
        {
            "ours_all": ours(scan, threads, fft_all),
            "floor_all": fft_floor(scan, plan_fft2(shape, threads)),
        },
        repeats,
    )
    (wall_1t, cpu_1t), (numpy_wall, numpy_cpu) = times["ours_1t"], times["numpy"]
    floor_1t, floor_all = times["floor_1t"][0], times["floor_all"][0]
    wall_all = times["ours_all"][0]
    result: dict[str, Any] = {
        "n_positions": size["n_positions"],
        "pattern_size": size["pattern_size"],
        "fft_library": fft_1t.library,
        "repeats": repeats,
        "iteration_s": wall_1t,
        "iteration_cpu_s": cpu_1t,
        "fft_floor_s": floor_1t,
        "iteration_over_fft_floor": wall_1t / floor_1t,
        # CPU-time medians beside the wall ones: on a shared machine a process waits for
        # a core, which CPU time leaves out (cache misses from neighbours stay in).
        "fft_floor_cpu_s": times["floor_1t"][1],
        "iteration_over_fft_floor_cpu": cpu_1t / times["floor_1t"][1],
        "block_fft_floor_s": times["block_floor_1t"][0],
        "block_fft_floor_cpu_s": times["block_floor_1t"][1],
        "iteration_over_block_fft_floor": wall_1t / times["block_floor_1t"][0],
        "iteration_s_2d_plan": times["ours_2d_1t"][0],
        "iteration_2d_plan_over_fft_floor": times["ours_2d_1t"][0] / floor_1t,
        "iteration_2d_plan_cpu_s": times["ours_2d_1t"][1],
        "iteration_s_all_threads": wall_all,
        "fft_floor_s_all_threads": floor_all,
        "iteration_over_fft_floor_all_threads": wall_all / floor_all,
        "threads": threads,
        "numpy_iteration_s": numpy_wall,
        "numpy_iteration_cpu_s": numpy_cpu,
        "speedup_vs_numpy": numpy_wall / wall_1t,
        "cpu_speedup_vs_numpy": numpy_cpu / cpu_1t,
        "ptychi_batched_iteration_s": None,
        "ptychi_batch_size": PTYCHI_BATCH,
        "ptychi_note": None,
    }
    try:
        step, reason = ptychi_step(scan, batch_size=PTYCHI_BATCH)
        if step is None:
            result["ptychi_note"] = reason
        else:
            # One epoch after a warm-up, beside ours on all threads (Pty-Chi uses them all).
            peer = interleaved({"ptychi": step, "ours_all": ours(scan, threads, fft_all)}, 1)
            result["ptychi_batched_iteration_s"] = peer["ptychi"][0]
            result["ptychi_batched_cpu_s"] = peer["ptychi"][1]
            result["ptychi_note"] = (
                f"Pty-Chi EPIE, CPU torch, default batch {PTYCHI_BATCH} (a parallel update, "
                f"not sequential ePIE), all threads; ours beside it: {peer['ours_all'][0]:.3f} s"
            )
            result["speedup_vs_ptychi"] = peer["ptychi"][0] / peer["ours_all"][0]
    except Exception as error:  # a peer that breaks must not hide our numbers
        result["ptychi_note"] = f"Pty-Chi failed: {type(error).__name__}: {error}"
    result["load_average_before"] = load_before
    result["load_average"] = os.getloadavg()
    return result


def report(result: dict[str, Any]) -> str:
    ptychi = result["ptychi_batched_iteration_s"]
    lines = [
        f"ePIE, one iteration over {result['n_positions']} positions of "
        f"{result['pattern_size']}x{result['pattern_size']} patterns, FFTs by "
        f"{result['fft_library']}, medians of {result['repeats']} interleaved runs "
        f"(load average {result['load_average'][0]:.2f}):",
        f"  ours, 1 thread          {result['iteration_s']:8.3f} s  FFTs alone "
        f"{result['fft_floor_s']:.3f} s ({result['iteration_over_fft_floor']:.2f}x the floor)",
        f"  its FFTs alone as the fused pass runs them (row/column plans) "
        f"{result['block_fft_floor_s']:.3f} s ({result['iteration_over_block_fft_floor']:.2f}x)",
        f"  ours, 2-D plans, 1 thread {result['iteration_s_2d_plan']:6.3f} s "
        f"({result['iteration_2d_plan_over_fft_floor']:.2f}x the floor)",
        f"  ours, {result['threads']} threads         {result['iteration_s_all_threads']:8.3f} s  "
        f"FFTs alone {result['fft_floor_s_all_threads']:.3f} s "
        f"({result['iteration_over_fft_floor_all_threads']:.2f}x)",
        f"  plain numpy (same update) {result['numpy_iteration_s']:6.3f} s "
        f"({result['speedup_vs_numpy']:.1f}x ours on 1 thread; CPU time "
        f"{result['cpu_speedup_vs_numpy']:.1f}x)",
        "  Pty-Chi (CPU)           "
        + (f"{ptychi:8.3f} s" if ptychi else "     n/a")
        + f"  {result['ptychi_note']}",
    ]
    return "\n".join(lines)
