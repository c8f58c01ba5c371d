"""Every misuse of the command line gets one clear line on stderr and exit status 2,
never a traceback: the real `prefect-beamline` run as a subprocess, as people type it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from prefect_beamline.lims import Lims
from prefect_beamline.stack import cli, free_port


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose LIMS, outbox and Prefect home are in tmp_path, with
    PREFECT_API_URL naming a port nothing listens on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_BEAMLINE_HOME=str(tmp_path / "beamline"),
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def assert_one_line_usage_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["rerun", "1", "--set", "x"], ["--set", "expected key=value", "'x'"]),
        (["rerun", "one"], ["collection_id", "'one'"]),
        (["serve", "--deployment", "no-such"], ["unknown deployment", "no-such"]),
        (["serve", "--prefect-file", "missing.yaml"], ["missing.yaml", "does not exist"]),
        (["demo", "xrf"], ["unknown technique 'xrf'", "mx"]),
        (["demo", "--images", "0"], ["--images", "positive"]),
        (["outbox", "list", "--status", "bogus"], ["bogus", "pending"]),
        (["frobnicate"], ["frobnicate", "demo"]),
    ],
)
def test_misuse_is_one_clear_line_and_exit_2(
    argv: list[str], fragments: list[str], isolated_env: dict[str, str], tmp_path: Path
) -> None:
    assert_one_line_usage_error(run_cli(*argv, env=isolated_env, cwd=tmp_path), *fragments)


def test_rerun_against_an_unreachable_prefect_api_names_the_address(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_cli("rerun", "1", "--deployment", "mx-rotation", env=isolated_env, cwd=tmp_path)
    assert_one_line_usage_error(
        done, "cannot reach the Prefect API", isolated_env["PREFECT_API_URL"]
    )


def test_demo_against_an_unreachable_prefect_api_names_the_address(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_cli(
        "demo", "--json", "--workdir", str(tmp_path / "demo"), env=isolated_env, cwd=tmp_path
    )
    assert_one_line_usage_error(
        done, "cannot reach the Prefect API", isolated_env["PREFECT_API_URL"]
    )


def test_rerun_of_a_collection_the_lims_lacks_says_so(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    lims_url = f"sqlite:///{tmp_path / 'lims.db'}"
    Lims(lims_url).create_schema()
    done = run_cli(
        "rerun", "424242", env={**isolated_env, "PREFECT_BEAMLINE_LIMS_URL": lims_url}, cwd=tmp_path
    )
    assert_one_line_usage_error(done, "424242", "not in the LIMS")


def test_rerun_on_a_lims_without_tables_names_the_lims(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    lims_url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = run_cli(
        "rerun", "7", env={**isolated_env, "PREFECT_BEAMLINE_LIMS_URL": lims_url}, cwd=tmp_path
    )
    assert_one_line_usage_error(done, "LIMS", "empty.db")


def test_version_names_the_installed_package(isolated_env: dict[str, str], tmp_path: Path) -> None:
    from importlib.metadata import version

    done = run_cli("--version", env=isolated_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"prefect-beamline {version('prefect-beamline')}")
