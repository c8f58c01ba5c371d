"""prefect-beamline as a facility installs it: from its wheel, into a fresh virtualenv.

Run by `make test`'s wheel step (.ci/wheel-check) with the installed package and a copy
of these tests outside the checkout; the editable test run leaves this folder out
(pyproject.toml `addopts`). PREFECT_BEAMLINE_SOURCE_TREE names the checkout the wheel was
built from, so the wheel can be compared with the tree.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

import prefect_beamline
from prefect_beamline.about import checkout_commit, version_text
from prefect_beamline.deployments import deployments_of, find_prefect_yaml
from prefect_beamline.techniques import registry

SOURCE_TREE_VARIABLE = "PREFECT_BEAMLINE_SOURCE_TREE"
# Where each folder of the source tree lands in the installed package.
INSTALLED_AS = {
    "prefect_beamline": "prefect_beamline",
    "flows": "prefect_beamline/flows",
    "blocks": "prefect_beamline/blocks",
    "ext": "prefect_beamline/ext",
}
SHIPPED_SUFFIXES = {".py", ".pyx", ".pxd", ".h"}
PACKAGE = Path(prefect_beamline.__file__).resolve().parent


@pytest.fixture(scope="module")
def source_tree() -> Path:
    value = os.environ.get(SOURCE_TREE_VARIABLE)
    if not value:
        pytest.fail(f"{SOURCE_TREE_VARIABLE} must name the checkout the wheel was built from")
    return Path(value).resolve()


def shipped_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts
    }


def test_prefect_beamline_is_imported_from_the_wheel_not_the_checkout(source_tree: Path) -> None:
    assert PACKAGE.parent.name == "site-packages", PACKAGE
    assert PACKAGE.is_relative_to(Path(sys.prefix).resolve()), (PACKAGE, sys.prefix)
    assert not PACKAGE.is_relative_to(source_tree)
    assert not Path.cwd().resolve().is_relative_to(source_tree)


def test_the_wheel_carries_every_module_of_the_source_tree(source_tree: Path) -> None:
    expected = {
        Path(installed_as) / relative
        for folder, installed_as in INSTALLED_AS.items()
        for relative in shipped_files(source_tree / folder)
    }
    installed = {Path("prefect_beamline") / path for path in shipped_files(PACKAGE)}
    assert expected - installed == set()


def test_every_kernel_is_compiled_into_the_wheel(source_tree: Path) -> None:
    kernels = sorted(path.stem for path in (source_tree / "ext").glob("_*.pyx"))
    assert kernels
    for name in kernels:
        module = importlib.import_module(f"prefect_beamline.ext.{name}")
        assert module.__file__ is not None and module.__file__.endswith(".so"), module


def test_the_wheel_carries_prefect_yaml(
    source_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    packaged = find_prefect_yaml()
    assert packaged.is_relative_to(PACKAGE) and not packaged.is_symlink()
    assert packaged.read_text() == (source_tree / "prefect.yaml").read_text()


def test_every_technique_has_its_flow_and_deployments_in_the_wheel() -> None:
    for spec in registry().values():
        deployments = deployments_of(spec.name)
        assert deployments, spec.name
        for deployment in deployments:
            module, _, function = deployment.entrypoint.partition(":")
            assert hasattr(importlib.import_module(module), function), deployment.entrypoint


def test_version_names_the_commit_the_wheel_was_built_from(source_tree: Path) -> None:
    # .ci/wheel-check notes the commit before it builds (the tree may change meanwhile).
    commit = os.environ.get("PREFECT_BEAMLINE_BUILT_FROM") or checkout_commit(source_tree)
    assert commit
    assert version_text().endswith(f"(commit {commit})")
