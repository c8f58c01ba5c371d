"""The live per-image path on a simulated 16 Mpixel Eiger (4148 x 4362 uint32, bslz4).

Frames: Poisson 0.5 counts with ~400 Bragg spots and Eiger gaps (`spotfind`'s frame),
compressed by hdf5plugin's bitshuffle-LZ4, sent over DECTRIS Stream V2 (CBOR over
ZeroMQ) by the simulator. The path per frame: receive, decode the CBOR, decompress
(our kernel, GIL released), spot finding, then the result to the LIMS (SQLite) and to a
real gateway's results stream, which a DAQ client follows over SSE.

Measured in one run, under the same load, as CPU time (what a frame costs a core; a
machine shared with other work inflates wall time far more):
- per frame on one thread, interleaved: the spot finder alone (`kernel_ms_per_frame`,
  `find_spots`), our decompression (`decode_ms_per_frame`; `decompress_ms_per_frame` is
  the same figure under its first name), the `bitshuffle` package's on the same chunk
  (the peer, `bitshuffle_package_ms_per_frame`; `decode_over_peer` ours / its), the
  Stream V2 image message's CBOR decoding (`receive_ms_per_frame`, the receiving
  thread's share), HDF5's filter (h5py read without chunk cache: the path before this
  issue), one memory pass (floor);
- `frames_per_s_per_core`: the whole path sustained with one analysis worker, frames
  sent as fast as taken: frames per CPU-second of the whole process (receive, CBOR,
  decompress, spot finding, LIMS and results-stream writes, plus the in-process gateway
  and DAQ client: an upper bound); `path_over_kernel` = (1000 / that) / kernel ms;
  `frames_per_s_wall_one_worker` the same run's wall-clock rate;
- `p50/p95_latency_s`: frame sent -> its result received by the DAQ client, with frames
  sent at 80 % of the wall-clock rate one worker sustained; `centre_after_last_frame_s`:
  last frame sent -> the grid scan's centre received by the DAQ client;
- `cores_for_560_hz`: 560 / frames_per_s_per_core.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.spotfind import realistic_frame
from benchmarks.timing import report_from
from prefect_beamline.events import GridScan
from prefect_beamline.ext.bslz4 import decode_bslz4
from prefect_beamline.ext.spotfind import find_spots
from prefect_beamline.formats.nxmx import DetectorGeometry
from prefect_beamline.formats.raw_chunks import RawFrame, encode_bslz4
from prefect_beamline.live.analysis import FrameAnalyser, SpotSettings
from prefect_beamline.live.daq_client import follow_results
from prefect_beamline.live.inputs import follow_stream
from prefect_beamline.live.session import LiveSession
from prefect_beamline.live.sinks import LimsResultsWriter, ResultsStreamPublisher
from prefect_beamline.live.stream2 import (
    SeriesHeader,
    Stream2Consumer,
    Stream2Simulator,
    decode_message,
    encode_message,
    image_message,
)
from prefect_beamline.stack import free_port

FULL_SHAPE = (4148, 4362)
# Detector, gateway and DAQ run in processes of their own (forked: they share the frames).
_FORK = multiprocessing.get_context("fork")
QUICK_SHAPE = (512, 640)
DETECTOR_RATE_HZ = 560
TOKEN, OPERATOR_TOKEN = "bench-daq", "bench-operator"


def _geometry(shape: tuple[int, int]) -> DetectorGeometry:
    return DetectorGeometry(
        wavelength_angstrom=0.9763,
        detector_distance_mm=200.0,
        beam_centre_x_px=shape[1] / 2,
        beam_centre_y_px=shape[0] / 2,
        pixel_size_x_mm=0.075,
        pixel_size_y_mm=0.075,
        saturation_value=1_000_000,
        image_shape=shape,
    )


def _header(shape: tuple[int, int], valid: np.ndarray, n_images: int, unique: str) -> SeriesHeader:
    return SeriesHeader(
        series_id=1,
        series_unique_id=unique,
        number_of_images=n_images,
        image_shape=shape,
        beam_center_x=shape[1] / 2,
        beam_center_y=shape[0] / 2,
        pixel_size_x_m=75e-6,
        pixel_size_y_m=75e-6,
        incident_wavelength_angstrom=0.9763,
        saturation_value=1_000_000,
        pixel_mask=np.where(valid, 0, 1).astype(np.uint32),
    )


def _h5py_filter_read_ms(frame: np.ndarray, repeats: int) -> float:
    """One frame read through HDF5's filter pipeline (h5py + hdf5plugin), in memory."""
    import h5py
    import hdf5plugin

    # No chunk cache: every read decompresses, as a collection's frames are read once.
    with h5py.File("bench-live", "w", driver="core", backing_store=False, rdcc_nbytes=0) as handle:
        dataset = handle.create_dataset(
            "data",
            data=frame[np.newaxis],
            chunks=(1, *frame.shape),
            **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
        )
        out = np.empty((1, *frame.shape), dtype=frame.dtype)
        dataset.read_direct(out)
        times = [_once_ms(dataset.read_direct, out)[0] for _ in range(repeats)]
        return statistics.median(times)


def _serve_gateway(home: Path, port: int) -> None:
    """A real gateway (uvicorn) with tokens and Prefect unreachable: its own process,
    as in production, so its CPU is not counted as the path's."""
    import uvicorn

    from prefect_beamline.gateway.server import create_app
    from prefect_beamline.settings import BeamlineSettings

    settings = BeamlineSettings(
        home=home, gateway_token=TOKEN, operator_token=OPERATOR_TOKEN, data_roots=[str(home)]
    )
    app = create_app(settings, api_url="http://127.0.0.1:9/api", lookup=lambda *a: None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class _Gateway:
    """The gateway process of the benchmark (forked before any thread starts)."""

    def __init__(self, home: Path) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = _FORK.Process(target=_serve_gateway, args=(home, self.port), daemon=True)
        self.process.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"benchmark gateway on {self.url} did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def _follow(url: str, collection_id: int, out: Any) -> None:
    """The DAQ (own process): when each image's result and the centre arrived."""
    received: dict[int, float] = {}
    centre_at: list[float] = []
    for message in follow_results(url, collection_id, TOKEN, timeout_s=600):
        if message["type"] == "image":
            received[int(message["image_number"])] = time.time()
        elif message["type"] == "centre":
            centre_at.append(time.time())
    out.put((received, centre_at))


def _send(endpoint: str, header: SeriesHeader, frames: Any, rate_hz: float, out: Any) -> None:
    """The detector (own process): the series over Stream V2, with each image's send time."""
    simulator = Stream2Simulator(endpoint, send_timeout_s=300)
    sent_at: list[float] = []
    try:
        simulator.send_series(header, frames, rate_hz=rate_hz, sent_at=sent_at)
    finally:
        simulator.close()
    out.put(sent_at)


def _lims_program(home: Path, collection_id: int) -> tuple[Any, int]:
    from prefect_beamline.events import CollectionEvent
    from prefect_beamline.lims import Lims

    lims = Lims(f"sqlite:///{home / 'lims.db'}")
    lims.create_schema()
    lims.record_data_collection(
        CollectionEvent(
            event_id=f"bench-{collection_id}",
            kind="started",
            technique="mx",
            experiment_type="gridscan",
            beamline="bench",
            visit="bench-1",
            collection_id=collection_id,
            data_files=[str(home / "stream")],
        )
    )
    job = lims.record_processing_job(
        data_collection_id=collection_id,
        recipe="mx-live",
        display_name="benchmark",
        automatic=True,
        triggered_by="benchmark",
        parameters={},
        run_key=f"bench-{collection_id}",
    )
    program = lims.start_program(
        processing_job_id=job, programs="bench", command_line="bench", environment="bench"
    )
    return lims, program


def _stream_run(
    home: Path,
    gateway: _Gateway,
    collection_id: int,
    frames: list[tuple[np.ndarray, bytes]],
    valid: np.ndarray,
    *,
    rate_hz: float,
    grid: GridScan | None,
) -> dict[str, Any]:
    """Stream `frames` at `rate_hz` (0: as fast as taken) into a one-worker session."""
    shape = valid.shape
    lims, program = _lims_program(home, collection_id)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    header = _header(shape, valid, len(frames), f"series-{collection_id}")
    daq_out, detector_out = _FORK.Queue(), _FORK.Queue()
    daq = _FORK.Process(target=_follow, args=(gateway.url, collection_id, daq_out), daemon=True)
    detector = _FORK.Process(
        target=_send, args=(endpoint, header, frames, rate_hz, detector_out), daemon=True
    )
    daq.start()
    detector.start()

    def make_session(geometry: DetectorGeometry, mask: np.ndarray, n_images: int) -> LiveSession:
        return LiveSession(
            FrameAnalyser(geometry, mask, SpotSettings()),
            n_images=n_images,
            grid=grid,
            publisher=ResultsStreamPublisher(gateway.url, collection_id, OPERATOR_TOKEN),
            lims_writer=LimsResultsWriter(lims, program, collection_id),
            n_workers=1,
            max_backlog=16,
        )

    consumer = Stream2Consumer(endpoint, receive_timeout_s=300)
    began = time.perf_counter()
    cpu_began = time.process_time()
    try:
        session = follow_stream(consumer, make_session, detector_distance_mm=200.0)
        summary = session.finish()
        elapsed = time.perf_counter() - began
        cpu_s = time.process_time() - cpu_began
        sent_at = detector_out.get(timeout=300)
        received, centre_at = daq_out.get(timeout=300)
    finally:
        consumer.close()
        detector.join(30)
        daq.join(30)
    latencies = [received[n] - sent_at[n - 1] for n in sorted(received)]
    return {
        "n_results": len(summary.results),
        "received": len(received),
        "elapsed_s": elapsed,
        "cpu_s": cpu_s,
        # Sustained rate: results received by the DAQ between the first and the last.
        "results_per_s": (len(received) - 1) / (max(received.values()) - min(received.values()))
        if len(received) > 1
        else 0.0,
        "latencies": latencies,
        "centre_after_last_frame_s": centre_at[0] - sent_at[-1] if centre_at else None,
        "blocked_s": summary.blocked_s,
    }


def _once_ms(function: Any, *args: Any, **kwargs: Any) -> list[float]:
    """One call's CPU time on this thread, in ms, as a one-element list: what it costs a
    core, which a machine shared with other work inflates far less than wall time."""
    started = time.thread_time()
    function(*args, **kwargs)
    return [1000.0 * (time.thread_time() - started)]


def _bitshuffle_peer() -> Any:
    """The `bitshuffle` package's decoder (the peer), if installed: same chunk, 1 thread."""
    try:
        import bitshuffle
    except ImportError:
        return None

    def decode(chunk: bytes, shape: tuple[int, int]) -> np.ndarray:
        blocks = np.frombuffer(chunk, dtype=np.uint8)[12:]
        block_bytes = int.from_bytes(chunk[8:12], "big")
        return bitshuffle.decompress_lz4(blocks, shape, np.dtype(np.uint32), block_bytes // 4)

    return decode


def run(quick: bool = False) -> dict[str, Any]:
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    distinct = 2 if quick else 4
    pairs = [realistic_frame(shape, seed) for seed in range(distinct)]
    valid = pairs[0][1]
    frames = [(frame, encode_bslz4(frame)) for frame, _ in pairs]
    analyser = FrameAnalyser(_geometry(shape), valid, SpotSettings())
    buffer = np.empty(shape, dtype=np.uint32)
    copy = np.empty(shape, dtype=np.uint32)
    kernel: list[float] = []
    decode: list[float] = []
    analyse: list[float] = []
    memory: list[float] = []
    peer_decode: list[float] = []
    receive: list[float] = []
    peer = _bitshuffle_peer()
    header = _header(shape, valid, len(frames), "bench-receive")
    messages = [
        encode_message(image_message(header, index, frame, chunk, 0.0))
        for index, (frame, chunk) in enumerate(frames)
    ]
    repeats = 2 if quick else 3
    for _ in range(repeats):  # interleaved, so every side sees the same load
        for index, (frame, chunk) in enumerate(frames):
            raw = RawFrame(index + 1, chunk, True, shape, np.dtype(np.uint32), "bench")
            kernel += _once_ms(find_spots, frame, valid, n_threads=1)
            decode += _once_ms(decode_bslz4, chunk, shape, np.uint32, out=buffer)
            analyse += _once_ms(analyser.analyse, raw)
            memory += _once_ms(np.copyto, copy, frame)
            receive += _once_ms(decode_message, messages[index])
            if peer is not None:
                peer_decode += _once_ms(peer, chunk, shape)
    kernel_ms = statistics.median(kernel)
    decode_ms = statistics.median(decode)
    peer_ms = statistics.median(peer_decode) if peer_decode else None
    decoder_exact = all(
        np.array_equal(decode_bslz4(chunk, shape, np.uint32), frame) for frame, chunk in frames
    )
    h5py_ms = _h5py_filter_read_ms(frames[0][0], 2 if quick else 3)

    n_sustained = 12 if quick else 48
    grid = (
        GridScan(steps_x=8, steps_y=5, dx_um=20, dy_um=20)
        if not quick
        else GridScan(steps_x=4, steps_y=3, dx_um=20, dy_um=20)
    )
    n_grid = grid.steps_x * grid.steps_y
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder:
        home = Path(folder)
        gateway = _Gateway(home)
        try:
            cycle = [frames[i % distinct] for i in range(n_sustained)]
            sustained = _stream_run(home, gateway, 101, cycle, valid, rate_hz=0, grid=None)
            # Per core: frames per CPU-second the whole process spent on the path (receive,
            # CBOR, decompress, spot finding, LIMS and gateway writes, and the in-process
            # gateway and DAQ client too: an upper bound on the path's cost).
            frames_per_s = sustained["n_results"] / sustained["cpu_s"]
            # 80 % of what one worker sustained on this machine now (wall clock).
            rate = 0.8 * sustained["results_per_s"]
            cycle = [frames[i % distinct] for i in range(n_grid)]
            paced = _stream_run(home, gateway, 102, cycle, valid, rate_hz=rate, grid=grid)
        finally:
            gateway.stop()
    latencies = sorted(paced["latencies"])
    path_ms = 1000.0 / frames_per_s
    return {
        "shape": list(shape),
        "compressed_ratio": round(frames[0][0].nbytes / len(frames[0][1]), 1),
        "load_average": os.getloadavg()[0],
        "frames_per_s_per_core": round(frames_per_s, 2),
        "frames_per_s_wall_one_worker": round(sustained["results_per_s"], 2),
        "kernel_ms_per_frame": round(kernel_ms, 2),
        "path_ms_per_frame": round(path_ms, 2),
        "path_over_kernel": round(path_ms / kernel_ms, 3),
        "analyse_ms_per_frame": round(statistics.median(analyse), 2),
        "decompress_ms_per_frame": round(decode_ms, 2),
        "decode_ms_per_frame": round(decode_ms, 2),
        "decode_over_peer": round(decode_ms / peer_ms, 3) if peer_ms else None,
        "receive_ms_per_frame": round(statistics.median(receive), 2),
        "h5py_filter_read_ms_per_frame": round(h5py_ms, 2),
        "bitshuffle_package_ms_per_frame": round(peer_ms, 2) if peer_ms else None,
        "memory_pass_ms": round(min(memory), 2),
        "p50_latency_s": round(float(np.percentile(latencies, 50)), 4),
        "p95_latency_s": round(float(np.percentile(latencies, 95)), 4),
        "latency_rate_hz": round(rate, 2),
        "centre_after_last_frame_s": (
            round(paced["centre_after_last_frame_s"], 4)
            if paced["centre_after_last_frame_s"] is not None
            else None
        ),
        "results_received": [sustained["received"], paced["received"]],
        "frames_sent": [n_sustained, n_grid],
        "cores_for_560_hz": round(DETECTOR_RATE_HZ / frames_per_s, 1),
        "decoder_equals_frames": decoder_exact,
    }


report = report_from(
    "live path on {shape[0]}x{shape[1]} uint32 bslz4 ({compressed_ratio}x), "
    "load {load_average:.1f}:\n"
    "  spot finder {kernel_ms_per_frame} ms/frame; decode {decode_ms_per_frame} ms "
    "(bitshuffle package {bitshuffle_package_ms_per_frame} ms, h5py filter "
    "{h5py_filter_read_ms_per_frame} ms, memory pass {memory_pass_ms} ms); "
    "CBOR of an image message {receive_ms_per_frame} ms\n"
    "  whole path {path_ms_per_frame} ms/frame = {frames_per_s_per_core} frames/s/core, "
    "path/kernel {path_over_kernel}\n"
    "  latency at {latency_rate_hz} Hz: p50 {p50_latency_s} s, p95 {p95_latency_s} s; "
    "centre {centre_after_last_frame_s} s after the last frame\n"
    "  560 Hz needs {cores_for_560_hz} cores"
)
