"""A flow refuses data outside PREFECT_BEAMLINE_DATA_ROOTS, or missing, before it writes
anything: no LIMS row, no folder, no file. The flows run in this process (a direct call,
as a script would make it) against the session stack's Prefect server and LIMS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_beamline.data_roots import OutsideDataRoots
from prefect_beamline.flows.mx import process_mx
from prefect_beamline.lims import Lims
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.mx.demo import demo_event
from prefect_beamline.techniques.mx.synth import write_mx_collection
from tests.e2e.helpers import next_collection_id


@pytest.fixture
def root(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The only data root of flows run in this process; the stack's LIMS and server."""
    data_root = tmp_path / "root"
    data_root.mkdir()
    monkeypatch.setenv("PREFECT_BEAMLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_BEAMLINE_LIMS_URL", stack.env["PREFECT_BEAMLINE_LIMS_URL"])
    monkeypatch.setenv("PREFECT_BEAMLINE_DATA_ROOTS", str(data_root))
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        yield data_root


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def assert_nothing_recorded(stack: LocalStack, collection_id: int) -> None:
    assert stack.lims.get_collection(collection_id) is None
    assert stack.lims.jobs_for_collection(collection_id) == []


def test_a_file_outside_the_roots_fails_the_run_and_nothing_is_written(
    stack: LocalStack, root: Path, tmp_path: Path
) -> None:
    synthetic = write_mx_collection(tmp_path / "outside", n_images=2, seed=3)
    before = tree(tmp_path / "outside")
    collection_id = next_collection_id()
    with pytest.raises(OutsideDataRoots) as refused:
        process_mx(collection_id, collection=demo_event(synthetic.master_file, collection_id, None))
    assert str(synthetic.master_file) in str(refused.value)
    assert f"PREFECT_BEAMLINE_DATA_ROOTS ({root})" in str(refused.value)
    assert tree(tmp_path / "outside") == before
    assert_nothing_recorded(stack, collection_id)


def test_a_missing_file_fails_the_run_before_any_folder_is_made(
    stack: LocalStack, root: Path
) -> None:
    missing = root / "i03" / "mx12345-1" / "xtal_9_master.h5"
    collection_id = next_collection_id()
    with pytest.raises(Exception) as refused:
        process_mx(collection_id, collection=demo_event(missing, collection_id, None))
    assert tree(root) == []  # no processing folder, no inputs.json
    assert_nothing_recorded(stack, collection_id)
    assert isinstance(refused.value, FileNotFoundError) and str(missing) in str(refused.value)


def test_a_symlink_out_of_the_root_is_refused(
    stack: LocalStack, root: Path, tmp_path: Path
) -> None:
    synthetic = write_mx_collection(tmp_path / "outside", n_images=2, seed=5)
    (root / "escape").symlink_to(tmp_path / "outside")
    before = tree(tmp_path / "outside")
    through_link = root / "escape" / synthetic.master_file.name
    collection_id = next_collection_id()
    with pytest.raises(OutsideDataRoots, match="is not under"):
        process_mx(collection_id, collection=demo_event(through_link, collection_id, None))
    assert tree(tmp_path / "outside") == before
    assert_nothing_recorded(stack, collection_id)


def test_a_results_folder_linked_out_of_the_root_is_refused(
    stack: LocalStack, root: Path, tmp_path: Path
) -> None:
    synthetic = write_mx_collection(root / "i03", n_images=2, seed=7)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "i03" / "processing").symlink_to(elsewhere)
    collection_id = next_collection_id()
    with pytest.raises(OutsideDataRoots, match="results folder"):
        process_mx(collection_id, collection=demo_event(synthetic.master_file, collection_id, None))
    assert tree(elsewhere) == []
    assert stack.lims.jobs_for_collection(collection_id) == []


def test_a_manual_rerun_of_a_collection_recorded_outside_the_roots_is_refused(
    stack: LocalStack, root: Path, tmp_path: Path
) -> None:
    synthetic = write_mx_collection(tmp_path / "outside", n_images=2, seed=9)
    collection_id = next_collection_id()
    Lims(stack.env["PREFECT_BEAMLINE_LIMS_URL"]).record_data_collection(
        demo_event(synthetic.master_file, collection_id, None)
    )
    before = tree(tmp_path / "outside")
    with pytest.raises(OutsideDataRoots, match=str(synthetic.master_file)):
        process_mx(collection_id)  # a rerun names only the collection
    assert tree(tmp_path / "outside") == before
    assert stack.lims.jobs_for_collection(collection_id) == []
