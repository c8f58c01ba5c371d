"""Tomography through the whole facility path with real parts: HTTP webhook -> gateway ->
Prefect event -> automation -> served `tomo-reconstruction` deployment -> completed flow
-> NeXus volume, previews, artifacts, LIMS rows (Tomogram included) -> completion event.

Uses the session-wide embedded stack of conftest.py.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import httpx
import pytest

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.events import CollectionEvent
from prefect_beamline.formats.nxtomo import NXTOMO_DATA
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.tomo import records
from prefect_beamline.techniques.tomo.demo import DEPLOYMENT, demo_event
from prefect_beamline.techniques.tomo.synth import SyntheticTomoScan, write_tomo_scan
from tests.e2e.compute import stack_computes_on
from tests.e2e.helpers import (
    announce,
    artifacts,
    cli_rerun,
    completed_events,
    completed_run,
    final_run,
    next_collection_id,
)

pytestmark = pytest.mark.e2e
CENTRE_TOLERANCE_PX = 0.5


def small_scan(folder: Path, seed: int) -> SyntheticTomoScan:
    return write_tomo_scan(folder, n_columns=96, n_rows=6, n_projections=120, seed=seed)


def announce_tomo(
    stack: LocalStack, scan_file: Path, collection_id: int, **processing_parameters: object
) -> CollectionEvent:
    """POST the DAQ's `finished` event; slices in chunks of 2 unless told otherwise."""
    chunks: dict[str, object] = {"slices_per_chunk": 2, **processing_parameters}
    return announce(stack, demo_event(scan_file, collection_id), **chunks)


def cached_chunk_runs(stack: LocalStack) -> int:
    """Chunk task runs Prefect answered from the cache (their results were persisted)."""
    body = {
        "task_runs": {
            "name": {"like_": "reconstruct-rows-"},
            "state": {"name": {"any_": ["Cached"]}},
        }
    }
    response = httpx.post(f"{stack.api_url}/task_runs/count", json=body, timeout=10.0)
    response.raise_for_status()
    return int(response.json())


def test_webhook_reconstructs_the_scan_into_volume_previews_artifacts_and_lims(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    scan = small_scan(tmp_path / "data", seed=5)
    event = announce_tomo(stack, scan.path, collection_id)

    flow_run_id = completed_run(stack, DEPLOYMENT, collection_id)

    lims = stack.lims
    [job] = lims.jobs_for_collection(collection_id)
    assert job.automatic and job.triggered_by == f"automation:{event.event_id}"
    assert job.program_status == "success"
    assert job.parameters["slices_per_chunk"] == 2  # the DAQ's override reached the flow
    results_dir = Path(job.attachments[0]).parent
    assert {Path(a).name for a in job.attachments} == {
        "volume.h5",
        "summary.json",
        "slice_xy.png",
        "slice_xz.png",
        "slice_yz.png",
    }
    assert not list(results_dir.glob("*.partial"))
    # Frames are stored whole (one chunk each), taller than a task's 2 rows: the run
    # staged the rows once for its tasks, and removed the copy when the volume was in.
    assert not (results_dir / "sinograms.h5").exists()

    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["shape"] == [6, 96, 96]
    assert summary["method"] == "gridrec"
    assert summary["centre_method"] == "0/180 pair"
    assert abs(summary["centre_of_rotation"] - scan.centre_true) < CENTRE_TOLERANCE_PX
    with h5py.File(results_dir / "volume.h5") as volume:
        data = volume["/entry/data/data"]
        assert volume["/entry/data"].attrs["NX_class"] == "NXdata"
        assert data.shape == (6, 96, 96) and data.dtype == "float32"
        assert data.chunks is not None and data.compression == "gzip"
        assert float(volume["/entry/process/centre_of_rotation"][()]) == pytest.approx(
            summary["centre_of_rotation"]
        )

    tomogram = records.tomogram(lims, job.program_id or -1)
    assert tomogram is not None
    assert tomogram.volume_file == str(results_dir / "volume.h5")
    assert (tomogram.size_x, tomogram.size_y, tomogram.size_z) == (96, 96, 6)
    assert tomogram.centre_of_rotation == pytest.approx(summary["centre_of_rotation"])

    stored = artifacts(stack, [f"tomo-dc{collection_id}-summary", f"tomo-dc{collection_id}-report"])
    report = next(a for a in stored if a["key"].endswith("-report"))
    assert report["data"].count("data:image/png;base64,") == 3
    events = completed_events(stack, collection_id)
    assert events and events[0]["payload"]["summary"]["shape"] == [6, 96, 96]
    assert any(flow_run_id in json.dumps(e["related"]) for e in events)


def test_rerun_with_centre_ring_filter_and_slices_is_recorded_separately(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    scan = small_scan(tmp_path / "data", seed=6)
    announce_tomo(stack, scan.path, collection_id)
    completed_run(stack, DEPLOYMENT, collection_id)

    # The same parameters again: every chunk comes back from the cache.
    cached_before = cached_chunk_runs(stack)
    cli_rerun(stack, collection_id, "slices_per_chunk=2")
    assert cached_chunk_runs(stack) - cached_before == 3  # 6 rows in chunks of 2

    output = cli_rerun(
        stack,
        collection_id,
        "centre_of_rotation=50.25",
        "ring_filter=false",
        "first_slice=1",
        "last_slice=3",
        "cache_chunks=false",
    )
    assert DEPLOYMENT in output and "COMPLETED" in output

    lims = stack.lims
    automatic, identical, manual = lims.jobs_for_collection(collection_id)
    assert identical.program_status == "success"
    assert (automatic.automatic, manual.automatic) == (True, False)
    assert manual.triggered_by == f"cli:{getpass.getuser()}"
    assert manual.parameters["ring_filter"] is False
    assert manual.parameters["cache_chunks"] is False
    first = records.tomogram(lims, automatic.program_id or -1)
    rerun = records.tomogram(lims, manual.program_id or -1)
    assert first is not None and rerun is not None
    assert (rerun.centre_of_rotation, rerun.centre_method) == (50.25, "user")
    assert (rerun.size_z, first.size_z) == (3, 6)
    assert Path(rerun.volume_file).parent != Path(first.volume_file).parent
    assert Path(first.volume_file).is_file() and Path(rerun.volume_file).is_file()
    with h5py.File(rerun.volume_file) as volume:
        assert list(volume["/entry/data/z"][()]) == [1, 2, 3]


def truncate(scan: SyntheticTomoScan) -> None:
    scan.path.write_bytes(scan.path.read_bytes()[: scan.path.stat().st_size * 2 // 3])


def garble_one_projection(scan: SyntheticTomoScan) -> None:
    """The file opens and its metadata reads; one compressed projection is garbage, so
    the run fails while chunks are being reconstructed."""
    with h5py.File(scan.path) as handle:
        offset = handle[NXTOMO_DATA].id.get_chunk_info(80).byte_offset  # a projection
    with scan.path.open("r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xff" * 64)


@pytest.mark.parametrize("damage", [truncate, garble_one_projection])
def test_damaged_scan_fails_naming_the_file_and_leaves_no_volume(
    stack: LocalStack, tmp_path: Path, damage: Callable[[SyntheticTomoScan], None]
) -> None:
    collection_id = next_collection_id()
    scan = small_scan(tmp_path / "data", seed=7)
    damage(scan)
    announce_tomo(stack, scan.path, collection_id)

    assert final_run(stack, DEPLOYMENT, collection_id).state == "FAILED"
    [job] = stack.lims.jobs_for_collection(collection_id)
    assert job.program_status == "failed"
    assert scan.path.name in (job.program_message or "")
    results = scan.path.parent / "processing" / "tomo-reconstruction"  # the deployment
    assert list(results.glob("*/inputs.json"))  # the job's folder exists...
    assert not list(results.glob("*/volume.h5*"))  # ...without a volume, whole or partial


def test_chunks_run_on_the_dask_cluster_the_compute_block_names(
    stack: LocalStack, tmp_path: Path
) -> None:
    """Named by the server's Compute block, not the DAQ, a Dask scheduler reconstructs the
    chunks one at a time; the volume is whole."""
    from distributed import LocalCluster

    collection_id = next_collection_id()
    scan = small_scan(tmp_path / "data", seed=8)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        stack_computes_on(
            stack, Compute(scheduler_address=cluster.scheduler_address, parallel_chunks=1)
        ),
    ):
        announce_tomo(stack, scan.path, collection_id, slices_per_chunk=1)
        completed_run(stack, DEPLOYMENT, collection_id)
        assert cluster.scheduler is not None
        assert cluster.scheduler.transition_counter > 0  # the scheduler really ran tasks
    [job] = stack.lims.jobs_for_collection(collection_id)
    with h5py.File(Path(job.results_dir or "", "volume.h5")) as volume:
        data = volume["/entry/data/data"][()]
    assert data.shape == (6, 96, 96)
    assert all(float(abs(data[row]).max()) > 0 for row in range(6))  # every slice written
