"""Rendering EER frames (Falcon 4, 4096² sensor) into one dose fraction.

One group of 20 EER frames of ~170,000 electrons each (0.01 e/pixel/frame), rendered at
4K by the Cython kernel (`prefect_beamline.ext.eer`), in the same run as the peer that
runs here, imagecodecs' `eer_decode` (what tifffile uses) decoding each frame to a uint8
image and adding it to the fraction, and as the floor one pass over the group's
bitstream bytes plus one write of the fraction (what any renderer must read and write).
Medians of interleaved calls, 1 thread.
"""

from __future__ import annotations

import statistics
from typing import Any

import imagecodecs
import numpy as np

from benchmarks.timing import report_from, timings_ms
from prefect_beamline.ext.eer import EERCode, eer_render
from prefect_beamline.formats.eer import encode_eer_frame

FULL_SENSOR = (4096, 4096)
QUICK_SENSOR = (1024, 1024)
ELECTRONS_PER_PIXEL = 0.01
FRAMES_PER_GROUP = 20
DISTINCT_FRAMES = 4  # encoding in Python is slow; the group cycles through these


def run(quick: bool = False) -> dict[str, Any]:
    sensor = QUICK_SENSOR if quick else FULL_SENSOR
    code = EERCode(rle_bits=7, sub_bits=2)
    rng = np.random.default_rng(0)
    n_pixels = sensor[0] * sensor[1]
    n_electrons = int(ELECTRONS_PER_PIXEL * n_pixels)
    streams = []
    for _ in range(DISTINCT_FRAMES):
        positions = np.sort(rng.choice(n_pixels, n_electrons, replace=False))
        sub_x, sub_y = rng.integers(0, 4, (2, n_electrons))
        encoded = encode_eer_frame(positions, sub_x, sub_y, n_pixels, code)
        streams.append(np.frombuffer(encoded, np.uint8))
    streams = [streams[i % DISTINCT_FRAMES] for i in range(FRAMES_PER_GROUP)]
    out = np.zeros(sensor, dtype=np.uint16)
    peer_out = np.zeros(sensor, dtype=np.uint16)
    total = np.concatenate(streams)
    copy = np.empty_like(total)
    image_copy = np.empty_like(out)

    def floor() -> None:
        np.copyto(copy, total)
        np.copyto(image_copy, out)

    def kernel() -> None:
        out.fill(0)
        for stream in streams:
            eer_render(stream, sensor, code, out)

    def peer() -> None:
        peer_out.fill(0)
        for stream in streams:
            np.add(
                peer_out, imagecodecs.eer_decode(stream.tobytes(), sensor, 7, 2, 2), out=peer_out
            )

    repeats = 3 if quick else 7
    times: dict[str, list[float]] = {"kernel": [], "peer": [], "floor": []}
    kernel()
    peer()
    for _ in range(repeats):
        times["kernel"] += timings_ms(kernel, 1)
        times["peer"] += timings_ms(peer, 1)
        times["floor"] += timings_ms(floor, 1)
    kernel_ms, peer_ms, floor_ms = (
        statistics.median(times[k]) for k in ("kernel", "peer", "floor")
    )
    return {
        "benchmark": "eer",
        "sensor": list(sensor),
        "frames_per_group": FRAMES_PER_GROUP,
        "electrons_per_frame": n_electrons,
        "bitstream_bytes": int(total.size),
        "kernel_ms_1t": round(kernel_ms, 2),
        "peer_ms_1t": round(peer_ms, 2),
        "floor_ms": round(floor_ms, 3),
        "speedup_vs_peer": round(peer_ms / kernel_ms, 2),
        "kernel_equals_peer": bool(np.array_equal(out, peer_out)),
        "peer": "imagecodecs.eer_decode (tifffile's EER codec)",
    }


report = report_from(
    "EER: {frames_per_group} frames of {sensor[0]} x {sensor[1]}, {electrons_per_frame} "
    "electrons each, into one 4K fraction\n"
    "  kernel (eer_render)            {kernel_ms_1t:8.1f} ms\n"
    "  imagecodecs.eer_decode + add   {peer_ms_1t:8.1f} ms  ({speedup_vs_peer}x)\n"
    "  floor: bitstreams read + fraction written {floor_ms:.2f} ms\n"
    "  same counts as the peer: {kernel_equals_peer}"
)
