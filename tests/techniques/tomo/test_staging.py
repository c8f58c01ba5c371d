"""Staged rows (techniques/tomo/staging.py): a scan stored frame by frame is read once,
and each chunk task then reads only its own rows."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from prefect.logging import disable_run_logger

from prefect_beamline.flows.tomo import TomoParameters, reconstruct_rows
from prefect_beamline.formats.nxtomo import DXCHANGE_DATA, TomoScan
from prefect_beamline.techniques.tomo.staging import STAGED_FILE, needs_staging, stage_rows
from prefect_beamline.techniques.tomo.synth import SyntheticTomoScan, write_tomo_scan

ROWS_PER_TASK = 2


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTomoScan:
    return write_tomo_scan(
        tmp_path_factory.mktemp("staging"), n_columns=48, n_rows=8, n_projections=40
    )


def test_a_scan_chunked_by_whole_frames_is_staged(scan: SyntheticTomoScan) -> None:
    """The synthetic scan, like a detector's file, is one compressed chunk per frame:
    reading 2 rows in place would decompress all 8 of every frame."""
    with TomoScan(scan.path) as data:
        assert data.rows_per_storage_chunk == 8
        assert needs_staging(data, ROWS_PER_TASK)
        assert not needs_staging(data, 8)


def test_a_contiguous_scan_is_read_in_place(tmp_path: Path, scan: SyntheticTomoScan) -> None:
    copy = tmp_path / "contiguous.nxs"
    with h5py.File(scan.path) as source, h5py.File(copy, "w") as target:
        for name in ("entry",):
            source.copy(name, target)
        del target["entry/instrument/detector/data"]
        target["entry/instrument/detector/data"] = source["entry/instrument/detector/data"][()]
    with TomoScan(copy) as data:
        assert data.rows_per_storage_chunk == 1
        assert not needs_staging(data, 1)


def test_staged_rows_hold_the_scans_rows_chunked_by_task(
    tmp_path: Path, scan: SyntheticTomoScan
) -> None:
    with TomoScan(scan.path) as data:
        staged = stage_rows(data, 2, 7, ROWS_PER_TASK, tmp_path)
        expected_rows = data.read_rows(2, 7)
        expected_flat, expected_dark = data.flat_and_dark(2, 7)
        angles = data.angles_deg
    assert staged.path == str(tmp_path / STAGED_FILE) and staged.first_row == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [STAGED_FILE]  # no partial left
    with h5py.File(staged.path) as handle:
        # A task's rows (aligned on the staged first row) fill whole chunks of their own.
        assert handle[DXCHANGE_DATA].chunks[1:] == (ROWS_PER_TASK, 48)
    with TomoScan(staged.path) as copy:
        np.testing.assert_array_equal(copy.read_rows(0, 5), expected_rows)
        flat, dark = copy.flat_and_dark(1, 3)
        np.testing.assert_array_equal(flat, expected_flat[1:3])
        np.testing.assert_array_equal(dark, expected_dark[1:3])
        np.testing.assert_array_equal(copy.angles_deg, angles)


@pytest.mark.parametrize("method", ["gridrec", "fbp"])
def test_a_chunk_from_staged_rows_equals_one_read_in_place(
    tmp_path: Path, scan: SyntheticTomoScan, method: str
) -> None:
    with TomoScan(scan.path) as data:
        staged = stage_rows(data, 2, 8, ROWS_PER_TASK, tmp_path)
    parameters = TomoParameters(method=method)  # type: ignore[arg-type]
    arguments = (str(scan.path), "signature", 4, 6, scan.centre_true, parameters)
    with disable_run_logger():
        in_place = reconstruct_rows.fn(*arguments)
        from_staged = reconstruct_rows.fn(*arguments, staged=staged)
    assert in_place.shape == (2, 48, 48)
    np.testing.assert_array_equal(from_staged, in_place)
