"""Crash recovery's settings and the zombie automation it registers (no server needed;
tests/e2e/test_once.py runs all of it against a real stack)."""

from __future__ import annotations

import os
import uuid

import pytest
from prefect.events.schemas.automations import Automation, Posture

from prefect_beamline.recovery import (
    HEARTBEAT_VARIABLE,
    LEGACY_HEARTBEAT_VARIABLE,
    _definition,
    heartbeat_seconds,
    zombie_automation,
)


@pytest.fixture(autouse=True)
def no_heartbeat_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HEARTBEAT_VARIABLE, raising=False)
    monkeypatch.delenv(LEGACY_HEARTBEAT_VARIABLE, raising=False)


def test_heartbeat_is_a_third_of_the_zombie_window_and_at_least_prefects_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert heartbeat_seconds(180) == 60
    assert os.environ[HEARTBEAT_VARIABLE] == "60"  # inherited by the flow-run processes
    monkeypatch.delenv(HEARTBEAT_VARIABLE)
    assert heartbeat_seconds(45) == 30


def test_a_heartbeat_slower_than_the_zombie_window_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HEARTBEAT_VARIABLE, "180")
    with pytest.raises(ValueError, match="PREFECT_FLOWS_HEARTBEAT_FREQUENCY=180.*ZOMBIE_AFTER"):
        heartbeat_seconds(90)


def test_zombie_automation_crashes_our_flows_runs_when_heartbeats_stop() -> None:
    automation = zombie_automation(["mx-processing"], 90)
    trigger = automation.trigger
    assert trigger.posture == Posture.Proactive  # type: ignore[union-attr]
    assert trigger.after == {"prefect.flow-run.heartbeat"}  # type: ignore[union-attr]
    assert trigger.within.total_seconds() == 90  # type: ignore[union-attr]
    assert automation.actions[0].type == "change-flow-run-state"
    assert "mx-processing" in str(trigger.match_related)  # type: ignore[union-attr]


def test_an_unchanged_automation_reads_back_equal_so_serve_leaves_it_alone() -> None:
    wanted = zombie_automation(["mx-processing"], 90)
    stored = Automation(id=uuid.uuid4(), **zombie_automation(["mx-processing"], 90).model_dump())
    assert _definition(stored) == _definition(wanted)
    assert _definition(zombie_automation(["mx-processing"], 60)) != _definition(wanted)
