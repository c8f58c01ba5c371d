"""`prefect-beamline outbox`: pages through the outbox and says when more exist, shows one
event, requeues and discards dead letters, against the outbox the settings name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_beamline.cli import main
from prefect_beamline.gateway.outbox import FAILED, PENDING, Outbox
from tests.gateway.test_outbox import announcement

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbox]:
    """The configured outbox with events evt-1..evt-5; evt-2 and evt-4 dead letters."""
    monkeypatch.setenv("PREFECT_BEAMLINE_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_BEAMLINE_OUTBOX_URL", raising=False)
    box = Outbox(f"sqlite:///{tmp_path / 'gateway.db'}")
    for number in range(1, 6):
        box.add(announcement(number), json.dumps({"n": number}).encode())
    for row in box.pending():
        if row.event_id in ("evt-2", "evt-4"):
            box.record_failure([row.sequence], "422 refused", give_up=True)
    yield box
    box.close()


def run_json(capsys: Capture, *argv: str) -> dict[str, object]:
    assert main(["outbox", *argv]) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_list_pages_and_says_when_more_exist(outbox: Outbox, capsys: Capture) -> None:
    first = run_json(capsys, "list", "--limit", "2", "--json")
    assert [e["event_id"] for e in first["events"]] == ["evt-1", "evt-2"]  # type: ignore[index, union-attr]
    assert first["more"] is True
    rest = run_json(capsys, "list", "--limit", "10", "--after", str(first["next_after"]), "--json")
    assert [e["event_id"] for e in rest["events"]] == ["evt-3", "evt-4", "evt-5"]  # type: ignore[index, union-attr]
    assert rest["more"] is False and rest["next_after"] is None

    assert main(["outbox", "list", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "evt-3" in lines[2]
    assert lines[-1] == f"... more events: add --after {outbox.get('evt-3').sequence}"  # type: ignore[union-attr]


def test_list_of_dead_letters_shows_their_errors(outbox: Outbox, capsys: Capture) -> None:
    assert main(["outbox", "list", "--status", "failed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "evt-2" in lines[0] and "evt-4" in lines[1]
    assert all("422 refused" in line and "attempts=1" in line for line in lines)


def test_show_prints_one_event_with_its_raw_body(outbox: Outbox, capsys: Capture) -> None:
    shown = run_json(capsys, "show", "evt-2")
    assert shown["status"] == FAILED and shown["raw_body"] == '{"n": 2}'
    assert shown["last_error"] == "422 refused"
    assert main(["outbox", "show", "no-such-event"]) == 1
    assert "no-such-event" in capsys.readouterr().err


def test_requeue_and_discard_dead_letters(outbox: Outbox, capsys: Capture) -> None:
    assert main(["outbox", "requeue", "--event-id", "evt-2"]) == 0
    assert "requeued 1 event(s)" in capsys.readouterr().out
    assert outbox.get("evt-2").status == PENDING  # type: ignore[union-attr]
    assert main(["outbox", "discard", "--event-id", "evt-1"]) == 0  # not a dead letter
    assert "discarded 0 event(s)" in capsys.readouterr().out
    assert main(["outbox", "discard", "--all"]) == 0
    assert "discarded 1 event(s)" in capsys.readouterr().out
    assert [row.event_id for row in outbox.list()] == ["evt-1", "evt-2", "evt-3", "evt-5"]


def test_discard_needs_an_id_or_all(outbox: Outbox) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["outbox", "discard"])
    assert exit_.value.code == 2
    assert outbox.counts()[FAILED] == 2
