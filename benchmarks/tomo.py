"""Tomographic reconstruction of one 2048-wide sinogram with 1800 angles: the Fourier
method (gridrec, `ext/_gridrec.pyx`), the exact back projector (FBP, `ext/_backproject.pyx`),
scikit-image's `iradon` and the best CPU peer from PyPI that runs here, in one run.

The sides are timed interleaved (round after round, every side once per round) and
reported as medians, so a ratio compares sides timed under the same load; the load
average before and after is in the result. `iradon` (minutes at this size) runs once,
in the middle of the first round; so does any side slower than 15 s per call. Peers,
as installed (the `tomo-peers` extra): algotom's direct Fourier inversion
(`dfi_reconstruction`, numpy/scipy) and astra-toolbox's CPU FBP. Quality is the NRMSE
against the phantom (normalised by its range) inside the reconstruction circle, for
every method; ours reconstruct the full square (`circle=False`) as iradon does.
Targets (issue 15): gridrec >= 50x iradon on one thread, faster than the peer, NRMSE
within 0.005 of iradon's, >= 1.8x on two threads.

Run as the README says, without the OpenBLAS variables this machine's environment may
set (they can slow a current numpy):
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/run.py tomo`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from benchmarks.timing import ALL_THREADS, median_ms, report_from
from prefect_beamline.ext.backproject import reconstruct
from prefect_beamline.ext.gridrec import reconstruct_fourier
from prefect_beamline.techniques.tomo.synth import phantom_sinogram, phantom_slice
from tests.techniques.tomo.metrics import circle_mask, nrmse

FULL = (2048, 1800)  # detector columns, angles
QUICK = (256, 180)
MARGIN = 2  # pixels inside the reconstruction circle that are scored
# A side slower than this (s) in its warm-up is timed in the first round only, as iradon
# is: the benchmark stays a few minutes long.
SLOW_S = 15.0


def _peers(
    sinogram: np.ndarray, angles_rad: np.ndarray, centre: float
) -> dict[str, Callable[[], np.ndarray]]:
    """The peers that import here, by name: each reconstructs the full square."""
    found: dict[str, Callable[[], np.ndarray]] = {}
    try:
        from algotom.rec.reconstruction import dfi_reconstruction

        def algotom_dfi() -> np.ndarray:
            return np.asarray(
                dfi_reconstruction(
                    sinogram, centre, angles=angles_rad, filter_name=None, pad_rate=0.25,
                    apply_log=False,
                )
            )  # fmt: skip

        found[f"algotom {version('algotom')} dfi_reconstruction"] = algotom_dfi
    except ImportError:
        pass
    try:
        import astra

        def astra_fbp() -> np.ndarray:
            # Our pixel (i, j) is at x = j - n//2, y = n//2 - i and the axis projects to
            # column n//2: astra centres both its volume and its detector, so the volume
            # is shifted by half a pixel and the detector gets one more column.
            n = sinogram.shape[1]
            volume = astra.create_vol_geom(
                n, n, -n / 2 - 0.5, n / 2 - 0.5, -n / 2 + 0.5, n / 2 + 0.5
            )
            padded = np.pad(sinogram, ((0, 0), (0, 1)))
            projection = astra.create_proj_geom("parallel", 1.0, n + 1, angles_rad)
            sino_id = astra.data2d.create("-sino", projection, padded)
            rec_id = astra.data2d.create("-vol", volume)
            config = astra.astra_dict("FBP")
            config["ReconstructionDataId"] = rec_id
            config["ProjectionDataId"] = sino_id
            config["ProjectorId"] = astra.create_projector("linear", projection, volume)
            algorithm = astra.algorithm.create(config)
            astra.algorithm.run(algorithm)
            result = astra.data2d.get(rec_id)
            astra.algorithm.delete(algorithm)
            astra.data2d.delete([sino_id, rec_id])
            astra.projector.delete(config["ProjectorId"])
            return np.asarray(result)

        found[f"astra-toolbox {version('astra-toolbox')} FBP (CPU)"] = astra_fbp
    except (ImportError, PackageNotFoundError):
        pass
    return found


def run(quick: bool = False) -> dict[str, Any]:
    from skimage.transform import iradon

    n_columns, n_angles = QUICK if quick else FULL
    rounds = 3
    angles_deg = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    angles_rad = np.deg2rad(angles_deg)
    sinogram = phantom_sinogram(n_columns, angles_deg)
    truth = phantom_slice(n_columns, angles_deg)
    inside = circle_mask(n_columns, margin=MARGIN)
    centre = n_columns // 2  # iradon's centre

    def fbp(threads: int) -> np.ndarray:
        return reconstruct(sinogram[None], angles_rad, centre, circle=False, n_threads=threads)[0]

    def fourier(threads: int) -> np.ndarray:
        return reconstruct_fourier(sinogram, angles_rad, centre, circle=False, n_threads=threads)[0]

    def scikit_image() -> np.ndarray:
        return np.asarray(
            iradon(
                sinogram.T.astype(np.float64), angles_deg, filter_name="ramp", circle=False,
                output_size=n_columns,
            )
        )  # fmt: skip

    peers = _peers(sinogram, angles_rad, float(centre))
    sides: dict[str, Callable[[], np.ndarray]] = {
        "fourier_1t": lambda: fourier(1),
        "fourier_all": lambda: fourier(ALL_THREADS),
        "fbp_1t": lambda: fbp(1),
        "fbp_all": lambda: fbp(ALL_THREADS),
        **{f"peer:{name}": call for name, call in peers.items()},
    }
    slices, slow = {}, set()
    for name, call in sides.items():  # warm-up; the slices are kept to score
        started = time.perf_counter()
        slices[name] = call()
        if time.perf_counter() - started > SLOW_S:
            slow.add(name)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in sides}
    iradon_ms = 0.0
    for index in range(rounds):
        for position, (name, call) in enumerate(sides.items()):
            if index > 0 and name in slow:
                continue
            started = time.perf_counter()
            call()
            times[name].append(1000.0 * (time.perf_counter() - started))
            if index == 0 and position == len(sides) // 2:
                started = time.perf_counter()
                slices["iradon"] = scikit_image()
                iradon_ms = 1000.0 * (time.perf_counter() - started)
    load_after = os.getloadavg()
    ms = {name: statistics.median(values) for name, values in times.items()}
    copy = np.empty_like(sinogram)
    memory_pass_ms = median_ms(lambda: np.copyto(copy, sinogram), 20)
    # The back projector against iradon, pixel by pixel (same filter, angles, centre).
    difference = float(np.abs(slices["fbp_1t"] - slices["iradon"])[circle_mask(n_columns, 1)].max())

    def score(image: np.ndarray) -> float:
        return round(nrmse(image, truth, inside), 5)

    peer_scores = {name: ms[f"peer:{name}"] for name in peers}
    peer_name = min(peer_scores, key=peer_scores.__getitem__) if peer_scores else None
    fourier_ms_1t, fourier_ms_all = ms["fourier_1t"], ms["fourier_all"]
    return {
        "benchmark": "tomo",
        "n_columns": n_columns,
        "n_angles": n_angles,
        "output_shape": [n_columns, n_columns],
        "filter": "ramp",
        "cores": ALL_THREADS,
        "rounds": rounds,
        "timed_once": sorted(name.removeprefix("peer:") for name in slow),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "fourier_ms_1t": round(fourier_ms_1t, 1),
        "fourier_ms_all": round(fourier_ms_all, 1),
        "kernel_ms_1t": round(ms["fbp_1t"], 1),
        "kernel_ms_all": round(ms["fbp_all"], 1),
        "iradon_ms": round(iradon_ms, 1),
        "memory_pass_ms": round(memory_pass_ms, 3),
        "peer_name": peer_name,
        "peer_ms": round(ms[f"peer:{peer_name}"], 1) if peer_name else None,
        "peers_ms": {name: round(value, 1) for name, value in peer_scores.items()},
        "fourier_speedup_vs_iradon_1t": round(iradon_ms / fourier_ms_1t, 1),
        "fourier_speedup_vs_peer_all": (
            round(ms[f"peer:{peer_name}"] / fourier_ms_all, 2) if peer_name else None
        ),
        "fourier_scaling_all_cores": round(fourier_ms_1t / fourier_ms_all, 2),
        "speedup_vs_iradon_1t": round(iradon_ms / ms["fbp_1t"], 1),
        "scaling_all_cores": round(ms["fbp_1t"] / ms["fbp_all"], 2),
        "fourier_nrmse_vs_phantom": score(slices["fourier_1t"]),
        "fbp_nrmse_vs_phantom": score(slices["fbp_1t"]),
        "iradon_nrmse_vs_phantom": score(slices["iradon"]),
        "peer_nrmse_vs_phantom": score(slices[f"peer:{peer_name}"]) if peer_name else None,
        "fourier_nrmse_vs_fbp": round(nrmse(slices["fourier_1t"], slices["fbp_1t"], inside), 5),
        "max_abs_difference_vs_iradon": difference,
        "relative_difference_vs_iradon": difference / float(np.abs(slices["iradon"]).max()),
        "peer": f"scikit-image {version('scikit-image')} iradon (linear interpolation)",
        "targets": {
            "fourier_speedup_vs_iradon_1t": ">= 50",
            "fourier_speedup_vs_peer_all": "> 1",
            "fourier_nrmse_vs_phantom": "<= iradon_nrmse_vs_phantom + 0.005",
            "fourier_scaling_all_cores": ">= 1.8 on 2 cores",
        },
    }


report = report_from(
    "reconstruction of one {n_columns}-wide sinogram, {n_angles} angles (ramp filter, "
    "full square), medians of {rounds} interleaved rounds, load {load_average_before} -> "
    "{load_average_after}\n"
    "  Fourier (gridrec), 1 thread    {fourier_ms_1t:10.1f} ms   NRMSE {fourier_nrmse_vs_phantom}\n"
    "  Fourier (gridrec), {cores} threads   {fourier_ms_all:10.1f} ms\n"
    "  FBP (back projector), 1 thread {kernel_ms_1t:10.1f} ms   NRMSE {fbp_nrmse_vs_phantom}\n"
    "  FBP (back projector), {cores} threads{kernel_ms_all:10.1f} ms\n"
    "  scikit-image iradon (once)     {iradon_ms:10.1f} ms   NRMSE {iradon_nrmse_vs_phantom}\n"
    "  peer {peer_name}: {peer_ms} ms, NRMSE {peer_nrmse_vs_phantom}\n"
    "  Fourier vs iradon on 1 thread {fourier_speedup_vs_iradon_1t}x (target >= 50x); "
    "{fourier_scaling_all_cores}x on {cores} cores (target >= 1.8x); "
    "{fourier_speedup_vs_peer_all}x the peer\n"
    "  FBP vs iradon on 1 thread {speedup_vs_iradon_1t}x; {scaling_all_cores}x on {cores} cores"
)
