"""The gateway's cached data-roots check refuses what the uncached one refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.data_roots import OutsideDataRoots
from prefect_beamline.gateway.door_paths import DoorPathCheck


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "i03").mkdir(parents=True)
    outside.mkdir()
    return root, outside


def test_files_under_a_root_pass_whether_or_not_they_exist(folders: tuple[Path, Path]) -> None:
    root, _ = folders
    (root / "i03" / "there_master.h5").touch()
    check = DoorPathCheck([root])
    check.check([str(root / "i03" / "there_master.h5"), str(root / "i03" / "later_master.h5")])
    check.check([str(root / "not" / "yet" / "made_master.h5")])


@pytest.mark.parametrize(
    "relative", ["../outside/x_master.h5", "i03/../../outside/x_master.h5", "i03/../.."]
)
def test_a_path_leading_out_is_refused_naming_it(folders: tuple[Path, Path], relative: str) -> None:
    root, _ = folders
    path = f"{root}/{relative}"
    with pytest.raises(OutsideDataRoots, match=r"data_files\[1\]"):
        DoorPathCheck([root]).check([str(root / "i03" / "ok_master.h5"), path])


def test_a_symlinked_folder_or_file_out_of_the_root_is_refused(
    folders: tuple[Path, Path],
) -> None:
    root, outside = folders
    (root / "escape").symlink_to(outside)
    (root / "i03" / "link_master.h5").symlink_to(outside / "x_master.h5")
    check = DoorPathCheck([root])
    for path in (root / "escape" / "x_master.h5", root / "i03" / "link_master.h5"):
        with pytest.raises(OutsideDataRoots, match=str(outside / "x_master.h5")):
            check.check([str(path)])


def test_a_folder_turned_into_a_symlink_out_is_refused_once_its_entry_expires(
    folders: tuple[Path, Path],
) -> None:
    root, outside = folders
    folder = root / "visit"
    folder.mkdir()
    check = DoorPathCheck([root], ttl_s=0.0)
    check.check([str(folder / "x_master.h5")])
    folder.rmdir()
    folder.symlink_to(outside)
    with pytest.raises(OutsideDataRoots):
        check.check([str(folder / "x_master.h5")])


def test_without_roots_everything_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutsideDataRoots, match="not set"):
        DoorPathCheck([]).check([str(tmp_path / "x_master.h5")])
