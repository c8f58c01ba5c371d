"""Serial crystallography through the whole facility path with real parts: HTTP webhook
-> gateway -> Prefect event -> automation -> served `ssx-processing` deployment ->
completed flow -> CXI hits CrystFEL reads, LIMS rows (ISPyB's SSX tables), artifacts,
completion event; a corrupt frame file fails the run naming the file.

Uses the session-wide embedded stack of conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from prefect_beamline.demo import daq_event
from prefect_beamline.events import CollectionEventKind
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.ssx import records
from prefect_beamline.techniques.ssx.demo import DEPLOYMENT, demo_event
from prefect_beamline.techniques.ssx.synth import SerialGeometry, write_serial_collection
from tests.e2e.helpers import (
    announce,
    artifacts,
    completed_events,
    completed_run,
    configure_live,
    final_run,
    follow_while_written_with_swmr,
    next_collection_id,
)

pytestmark = pytest.mark.e2e
SMALL = SerialGeometry(shape=(256, 288), beam_centre_px=(140.3, 121.6), detector_distance_mm=40.0)


def test_webhook_runs_ssx_to_cxi_hits_lims_rows_and_artifacts(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    synthetic = write_serial_collection(
        tmp_path / "data", n_frames=30, hit_fraction=0.4, geometry=SMALL, seed=21
    )
    announce(stack, demo_event(synthetic.master_file, collection_id), frames_per_chunk=10)

    flow_run_id = completed_run(stack, DEPLOYMENT, collection_id)

    job = stack.lims.jobs_for_collection(collection_id)[0]
    assert job.automatic and job.program_status == "success"
    results_dir = Path(str(job.results_dir))
    true_hits = np.flatnonzero(synthetic.is_hit) + 1
    # The CXI file as CrystFEL reads it (peak_list_type = cxi): the hits, in order.
    with h5py.File(results_dir / "hits.cxi", "r") as cxi:
        assert list(cxi["/entry_1/result_1/imageNumber"][()]) == list(true_hits)
        frames = cxi["/entry_1/data_1/data"]
        assert frames.shape == (true_hits.size, *SMALL.shape)
        n_peaks = cxi["/entry_1/result_1/nPeaks"][()]
        xs = cxi["/entry_1/result_1/peakXPosRaw"][()]
        ys = cxi["/entry_1/result_1/peakYPosRaw"][()]
        assert cxi["/entry_1/result_1/peakTotalIntensity"][()].max() > 0
        for row, image_number in enumerate(true_hits):
            spots = synthetic.spots[int(image_number)]
            assert 0.85 * len(spots) <= n_peaks[row] <= len(spots)
            x, y = xs[row, : n_peaks[row]], ys[row, : n_peaks[row]]
            nearest = np.hypot(x[:, None] - spots[None, :, 0], y[:, None] - spots[None, :, 1])
            assert nearest.min(axis=1).max() < 1.0
    lines = (results_dir / "hits.lst").read_text().splitlines()
    assert lines == [f"hits.cxi //{index}" for index in range(true_hits.size)]
    assert "peak_list_type = cxi" in (results_dir / "detector.geom").read_text()

    summary = json.loads((results_dir / "summary.json").read_text())
    assert (summary["n_frames"], summary["n_hits"]) == (30, true_hits.size)
    result = records.ssx_result(stack.lims, job.program_id or -1)
    assert result is not None and result.hitRate == pytest.approx(true_hits.size / 30)
    chunks = records.chunk_hit_rates(stack.lims, job.program_id or -1)
    assert [chunk.first_image for chunk in chunks] == [1, 11, 21]
    assert sum(chunk.n_hits for chunk in chunks) == true_hits.size
    assert {"hit_rate.png", "peaks_per_frame.png", "radial_profiles.png"} <= {
        Path(path).name for path in job.attachments
    }

    stored = artifacts(stack, [f"ssx-dc{collection_id}-chunks", f"ssx-dc{collection_id}-report"])
    assert all(a["flow_run_id"] for a in stored)
    completed = completed_events(stack, collection_id)
    assert completed and completed[0]["payload"]["summary"]["n_hits"] == true_hits.size
    assert any(flow_run_id in json.dumps(e["related"]) for e in completed)


def test_corrupt_frame_file_fails_the_run_naming_the_file(
    stack: LocalStack, tmp_path: Path
) -> None:
    collection_id = next_collection_id()
    synthetic = write_serial_collection(
        tmp_path / "data", n_frames=8, frames_per_data_file=4, geometry=SMALL, seed=22
    )
    broken = synthetic.data_files[1]
    content = bytearray(broken.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 4096] = bytes(4096)  # a frame's compressed bytes zeroed
    broken.write_bytes(bytes(content))
    announce(stack, demo_event(synthetic.master_file, collection_id))
    assert final_run(stack, DEPLOYMENT, collection_id).state == "FAILED"
    job = stack.lims.jobs_for_collection(collection_id)[0]
    assert job.program_status == "failed"
    assert broken.name in (job.program_message or "")


def test_serial_collection_written_with_swmr_gives_hit_rates_live_through_the_stack(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The DAQ's `started` event runs `ssx-live` through its automation; the DAQ following
    the results stream gets every frame's peaks and each chunk's hit rate, then the end;
    the chunk rows are in the LIMS when the run completes."""
    collection_id = next_collection_id()
    configure_live(stack, "i24-swmr", {"input": "swmr", "workers": 1})
    source = write_serial_collection(
        tmp_path / "source", n_frames=30, frames_per_data_file=10, hit_fraction=0.4,
        geometry=SMALL, seed=21,
    )  # fmt: skip
    event = daq_event(
        "ssx",
        collection_id,
        tmp_path / "data" / source.master_file.name,
        beamline="i24-swmr",
        visit="mx23457-1",  # a visit is on one beamline
        experiment_type="jet",
        kind=CollectionEventKind.started,
        processing_parameters={"frames_per_chunk": 10},
    )
    messages = follow_while_written_with_swmr(stack, event, source.master_file, rate_hz=20)

    images = sorted(m["image_number"] for m in messages if m["type"] == "image")
    assert images == list(range(1, 31))
    rates = [m for m in messages if m["type"] == "hit_rate"]
    assert [(m["first_image"], m["n_frames"]) for m in rates] == [(1, 10), (11, 10), (21, 10)]
    assert abs(sum(m["n_hits"] for m in rates) - int(source.is_hit.sum())) <= 1
    assert messages[-1]["type"] == "end"
    completed_run(stack, "ssx-live/ssx-live", collection_id)
    (job,) = stack.lims.jobs_for_collection(collection_id)
    assert (job.recipe, job.program_status) == ("ssx-live", "success")
    assert job.program_id is not None
    stored = records.chunk_hit_rates(stack.lims, job.program_id)
    assert [(c.first_image, c.n_hits) for c in stored] == [
        (m["first_image"], m["n_hits"]) for m in rates
    ]
