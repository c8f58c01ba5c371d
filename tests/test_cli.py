"""The command line parses what the README and docs tell people to type."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_beamline.cli import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--json"],
        ["demo", "mx", "--grid", "--workdir", "/tmp/x"],
        ["gateway", "--host", "0.0.0.0", "--port", "8787"],
        ["serve", "--deployment", "mx-rotation", "--limit", "4"],
        ["recover", "--deployment", "mx-rotation"],
        ["rerun", "42", "--set", "sigma_strong=4", "--set", "images_per_chunk=50", "--wait"],
        ["outbox", "list", "--status", "pending"],
        ["outbox", "requeue", "--event-id", "i03-0042-end"],
        ["outbox", "list", "--status", "failed", "--limit", "50", "--after", "1200", "--json"],
        ["outbox", "show", "i03-0042-end"],
        ["outbox", "requeue", "--all"],
        ["outbox", "discard", "--event-id", "i03-0042-end"],
        ["outbox", "discard", "--all"],
    ],
)
def test_documented_commands_parse(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).handler is not None


def test_outbox_list_with_unknown_status_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_BEAMLINE_HOME", str(tmp_path))
    assert main(["outbox", "list", "--status", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_demo_of_an_unknown_technique_says_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "xrf"]) == 2
    error = capsys.readouterr().err
    assert "available: " in error
    assert all(name in error for name in ("mx", "tomo", "em", "ptycho"))
