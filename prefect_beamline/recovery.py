"""Crash recovery: zombie flow runs detected, retried, and never left open in the LIMS.

A runner killed with `kill -9` (or a lost host) takes its flow-run processes with it and
tells nobody: the runs stay RUNNING and their LIMS jobs stay open. Three parts put that
right, all registered by `prefect-beamline serve` (or `prefect-beamline recover` beside a
`prefect deploy` install):

1. **Heartbeats.** Every flow-run process emits `prefect.flow-run.heartbeat` every
   PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (Prefect's minimum: 30).
2. **The zombie automation** (Prefect's "Detect zombie flows" recipe): after a
   heartbeat of one of our flows, expect another event of that flow run within
   `zombie_after_seconds`; if none comes, the server sets the run CRASHED.
3. **The recovery loop** (`recover_once`, every `recovery_seconds`): a CRASHED run of
   our deployments is scheduled again, the same flow run, so it reopens the same LIMS job
   (run key = flow-run id) and its finished chunks come back from the result cache, up
   to `crash_retries` times; then its open LIMS job, like any whose flow run ended
   failed, crashed or cancelled without closing it, is marked failed with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import OrchestrationResult
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.flows import load_flow_from_entrypoint
from prefect.logging import get_logger
from prefect.states import AwaitingRetry

from prefect_beamline.deployments import DeploymentSpec
from prefect_beamline.lims import Lims
from prefect_beamline.settings import BeamlineSettings

ZOMBIE_AUTOMATION = "prefect-beamline: crash zombie flow runs"
HEARTBEAT_VARIABLE = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
# Prefect's own name for it, still honoured.
LEGACY_HEARTBEAT_VARIABLE = "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"
MINIMUM_HEARTBEAT_SECONDS = 30
# Crashes older than this are history, not something to retry at start-up.
RECOVERY_WINDOW = timedelta(days=1)
# Open LIMS jobs older than this are left to people.
OPEN_JOB_WINDOW = timedelta(days=7)
ENDED_BADLY = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
MAX_BACKOFF_S = 60.0
# Starts the message of the AwaitingRetry states recovery sets: they count its retries.
RECOVERY_MESSAGE = "crash recovery"

logger = get_logger("prefect_beamline.recovery")


@dataclass(frozen=True)
class Served:
    """What one recovery loop looks after: its flows, deployments and LIMS recipes."""

    flow_names: list[str]
    deployment_names: list[str]


def served_by(specs: Sequence[DeploymentSpec]) -> Served:
    """The flows and deployments of these specs (their flow modules get imported)."""
    flow_names = {load_flow_from_entrypoint(spec.entrypoint).name for spec in specs}
    return Served(sorted(flow_names), [spec.name for spec in specs])


def heartbeat_seconds(zombie_after_seconds: int) -> int:
    """The flow runs' heartbeat period, set for them (a third of the zombie window,
    at least Prefect's 30 s) unless the environment chose one; it must leave room for
    a late heartbeat before the run is taken for a zombie."""
    chosen = os.environ.get(HEARTBEAT_VARIABLE) or os.environ.get(LEGACY_HEARTBEAT_VARIABLE)
    seconds = int(chosen) if chosen else max(MINIMUM_HEARTBEAT_SECONDS, zombie_after_seconds // 3)
    if seconds >= zombie_after_seconds:
        raise ValueError(
            f"{HEARTBEAT_VARIABLE}={seconds} must be less than "
            f"PREFECT_BEAMLINE_ZOMBIE_AFTER_SECONDS={zombie_after_seconds}: every run "
            "would be taken for a zombie between two heartbeats"
        )
    os.environ[HEARTBEAT_VARIABLE] = str(seconds)
    return seconds


def zombie_automation(flow_names: Sequence[str], zombie_after_seconds: int) -> AutomationCore:
    """Prefect's zombie recipe for our flows: a run whose heartbeats stop is CRASHED."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks a prefect-beamline flow run crashed when its heartbeats stop "
        "(its runner or host died); `prefect-beamline serve` then retries it.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "flow",
                "prefect.resource.name": list(flow_names),
            },
            after={"prefect.flow-run.heartbeat"},
            # Any later event of the run (a heartbeat, a state change) shows it is alive.
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=zombie_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {zombie_after_seconds} s: its runner or host "
                "stopped (crash recovery retries it)",
            )
        ],
    )


def ensure_automation(client: SyncPrefectClient, automation: AutomationCore) -> None:
    """Create the automation, or bring the one of that name up to date.

    An unchanged automation is left alone: updating one resets its open windows, so a
    runner restarting while a zombie waits to be found would hide that zombie for good.
    """
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        client.create_automation(automation)
        return
    if _definition(existing[0]) != _definition(automation):
        client.update_automation(existing[0].id, automation)
    for duplicate in existing[1:]:  # two serves starting at once may both have created it
        client.delete_automation(duplicate.id)


def _definition(automation: AutomationCore) -> dict[str, Any]:
    """What an automation does, without the ids the server gives it and its parts."""
    fields = set(AutomationCore.model_fields)
    definition = automation.model_dump(mode="json", include=fields)
    definition["trigger"].pop("id", None)
    return definition


def crashed_runs(client: SyncPrefectClient, served: Served) -> list[FlowRun]:
    """Our deployments' runs that crashed within RECOVERY_WINDOW."""
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=served.flow_names)),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=served.deployment_names)),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))
        ),
        limit=200,
    )
    since = datetime.now(UTC) - RECOVERY_WINDOW
    return [run for run in runs if run.state and run.state.timestamp >= since]


def retries_used(client: SyncPrefectClient, run: FlowRun) -> int:
    """How often crash recovery has scheduled this run again (its state history says)."""
    return sum(
        1
        for state in client.read_flow_run_states(run.id)
        if (state.message or "").startswith(RECOVERY_MESSAGE)
    )


def retry_crashed(client: SyncPrefectClient, run: FlowRun, crash_retries: int) -> bool:
    """Schedule the crashed run again (same id, so same LIMS job); False when its
    retries are used up."""
    used = retries_used(client, run)
    if used >= crash_retries:
        return False
    reason = run.state.message if run.state else ""
    message = f"{RECOVERY_MESSAGE}, retry {used + 1} of {crash_retries} after: {reason}"
    result: OrchestrationResult[Any] = client.set_flow_run_state(
        run.id, AwaitingRetry(scheduled_time=datetime.now(UTC), message=message)
    )
    logger.info("flow run %s (%s): %s -> %s", run.name, run.id, message, result.status.value)
    return True


def why_ended(
    client: SyncPrefectClient, run: FlowRun | None, run_key: str, crash_retries: int
) -> str | None:
    """Why an open job's flow run will not finish it, or None while it still may."""
    if run is None:
        return f"flow run {run_key} no longer exists"
    state = run.state
    if state is None or state.type not in ENDED_BADLY:
        return None
    attempts = ""
    if state.type == StateType.CRASHED:
        used = retries_used(client, run)
        recent = state.timestamp >= datetime.now(UTC) - RECOVERY_WINDOW
        if used < crash_retries and recent:
            return None  # crash recovery starts it again
        attempts = f" after {used} crash-recovery retries"
    return f"flow run {run.name} ended {state.name}{attempts}: {state.message or ''}".strip()


def flow_run_id(run_key: str) -> UUID | None:
    """A job's run key as a flow-run id; None for a flow called outside Prefect."""
    try:
        return UUID(run_key)
    except ValueError:
        return None


RUNS_PER_REQUEST = 200


def flow_runs_by_id(client: SyncPrefectClient, ids: Sequence[UUID]) -> dict[UUID, FlowRun]:
    """These flow runs, those that still exist, RUNS_PER_REQUEST per request: a burst
    leaves dozens of jobs open at once, and one request each, every pass, loaded the
    server."""
    found: dict[UUID, FlowRun] = {}
    for start in range(0, len(ids), RUNS_PER_REQUEST):
        batch = list(ids[start : start + RUNS_PER_REQUEST])
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=len(batch)
        )
        found.update((run.id, run) for run in runs)
    return found


def close_abandoned_jobs(
    client: SyncPrefectClient, lims: Lims, recipes: Sequence[str], crash_retries: int
) -> list[int]:
    """Mark failed every open job whose flow run ended without finishing it; their ids."""
    closed = []
    jobs = [
        (job, run_id)
        for job in lims.open_jobs(recipes, OPEN_JOB_WINDOW)
        if (run_id := flow_run_id(job.run_key)) is not None
    ]
    runs = flow_runs_by_id(client, [run_id for _, run_id in jobs])
    for job, run_id in jobs:
        reason = why_ended(client, runs.get(run_id), job.run_key, crash_retries)
        if reason is not None:
            lims.finish_program(job.program_id, success=False, message=reason)
            logger.warning("LIMS job %d marked failed: %s", job.processing_job_id, reason)
            closed.append(job.processing_job_id)
    return closed


def recover_once(
    client: SyncPrefectClient, lims: Lims, served: Served, crash_retries: int
) -> tuple[int, list[int]]:
    """One pass: retry crashed runs, close abandoned jobs. (runs retried, jobs closed)."""
    retried = sum(retry_crashed(client, run, crash_retries) for run in crashed_runs(client, served))
    return retried, close_abandoned_jobs(client, lims, served.deployment_names, crash_retries)


def recovery_loop(served: Served, settings: BeamlineSettings, stop: threading.Event) -> None:
    """`recover_once` every `recovery_seconds` until `stop`; errors back off and retry."""
    lims = Lims(settings.resolved_lims_url)
    failures = 0
    while not stop.is_set():
        try:
            lims.create_schema()  # a fresh LIMS has no tables until the first flow runs
            with get_client(sync_client=True) as client:
                recover_once(client, lims, served, settings.crash_retries)
            failures = 0
        except Exception:
            failures += 1
            logger.exception("crash recovery pass failed (%d in a row); retrying", failures)
        pause = settings.recovery_seconds * 2 ** min(failures, 10)
        stop.wait(min(pause, max(MAX_BACKOFF_S, settings.recovery_seconds)))


def start_recovery(
    served: Served, settings: BeamlineSettings, *, attempts: int = 10
) -> threading.Event:
    """Register the zombie automation, then run the recovery loop in a daemon thread.

    Call before flow-run processes start: it sets their heartbeat period. Returns the
    event that stops the loop.
    """
    heartbeat = heartbeat_seconds(settings.zombie_after_seconds)
    automation = zombie_automation(served.flow_names, settings.zombie_after_seconds)
    for attempt in range(1, attempts + 1):
        try:
            with get_client(sync_client=True) as client:
                ensure_automation(client, automation)
            break
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(min(2.0**attempt, 30.0))
    print(
        f"crash recovery: heartbeat every {heartbeat} s, zombie after "
        f"{settings.zombie_after_seconds} s, up to {settings.crash_retries} retries, "
        f"checked every {settings.recovery_seconds} s",
        flush=True,
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=recovery_loop, args=(served, settings, stop), name="crash-recovery", daemon=True
    )
    thread.start()
    return stop
