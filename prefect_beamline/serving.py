"""`prefect-beamline serve`: every deployment of `prefect.yaml` from one warm runner.

Prefect's runner starts each flow run in a fresh interpreter, which imports Prefect,
numpy and h5py again before the run reports RUNNING: 1.5–2.5 s of the 3.3 s a webhook
took to become a running flow (docs/benchmarks.md). A beamline wants that gap small, so
this runner

- registers the flows themselves (`Runner.add_flow`), so runs start from the flow object
  in memory instead of `python -m prefect.engine` re-resolving the entrypoint;
- starts those runs from a *forkserver* that imported Prefect and the flow modules once
  (`warm_start`): each run is a fork of an already-warm interpreter, a fresh process as
  before (isolation, crash handling and cancellation stay Prefect's);
- polls for scheduled runs every `poll_seconds` (Prefect's setting only takes whole
  seconds).

`PREFECT_BEAMLINE_WARM_START=false` turns the forkserver off (plain spawn, as Prefect).
"""

from __future__ import annotations

import asyncio
import copyreg
import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.runner import Runner

from prefect_beamline.capacity import runner_limit
from prefect_beamline.deployments import DeploymentSpec, deployment_arguments, selected_specs
from prefect_beamline.metrics import start_runner_metrics
from prefect_beamline.settings import get_settings
from prefect_beamline.tracing import trace_served_runs

DEFAULT_POLL_SECONDS = 0.25
WARM_START_VARIABLE = "PREFECT_BEAMLINE_WARM_START"
# Imported once by the forkserver, so a flow-run process starts with them loaded.
# matplotlib too: every technique's report draws, and importing it cost each run ~0.4 s.
ALWAYS_PRELOADED = [
    "prefect",
    "prefect.flow_engine",
    "prefect.runner",
    "numpy",
    "h5py",
    "matplotlib.pyplot",
]
# Set-up every flow-run process would repeat (LIMS mappers, TLS contexts, settings), done
# once; last, it freezes what the forkserver holds out of the children's collections.
WARM_PROCESS = "prefect_beamline.warm_process"


def warm_start_enabled() -> bool:
    return os.environ.get(WARM_START_VARIABLE, "true").lower() not in {"0", "false", "no"}


class _ForkserverMultiprocessing(ModuleType):
    """`multiprocessing` as Prefect's flow engine sees it, with spawn served by a forkserver.

    Prefect 3.9 starts a served flow run with `multiprocessing.get_context("spawn")`
    (`prefect.flow_engine.run_flow_in_subprocess`). Handing it a preloaded forkserver
    context instead gives the same fresh child process without the imports.
    """

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        super().__init__("multiprocessing")
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)

    def get_context(self, method: str | None = None) -> multiprocessing.context.BaseContext:
        return self._context


def warm_start(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """Make Prefect start served flow runs by forking a preloaded interpreter."""
    import prefect.flow_engine

    context = multiprocessing.get_context("forkserver")
    # warm_process last: it configures the mappers the flow modules' tables declare.
    context.set_forkserver_preload([*ALWAYS_PRELOADED, *preload, WARM_PROCESS])
    engine: Any = prefect.flow_engine
    engine.multiprocessing = _ForkserverMultiprocessing(context)
    # Start it now, not at the first run: its imports are the cost we are avoiding.
    multiprocessing.forkserver.ensure_running()
    return context


def flow_module(spec: DeploymentSpec) -> str:
    """`prefect_beamline.flows.mx` of the entrypoint `prefect_beamline.flows.mx:process_mx`."""
    return entrypoint_module(spec.entrypoint)


def entrypoint_module(entrypoint: str) -> str:
    """The module of a `module:function` entrypoint."""
    module, _, _ = entrypoint.rpartition(":")
    return module


def warm_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow at `entrypoint`, sent to its run's process by entrypoint (see below)."""
    flow: Flow[..., Any] = load_flow_from_entrypoint(entrypoint)
    pickle_by_entrypoint(flow, entrypoint)
    return flow


def build_runner(
    specs: Sequence[DeploymentSpec],
    *,
    limit: int | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> Runner:
    """A runner holding every spec's flow, deployment and triggers."""
    runner = Runner(
        name="prefect-beamline", limit=limit, pause_on_shutdown=False, query_seconds=poll_seconds
    )
    for spec in specs:
        runner.add_flow(warm_flow(spec.entrypoint), **deployment_arguments(spec))
    return runner


def pickle_by_entrypoint(flow: Flow[..., Any], entrypoint: str) -> None:
    """Send `flow` to its run's process as its entrypoint, not as pickled code.

    The runner pickles a served flow into each run's process. By default cloudpickle
    copies the function by value with only the globals its body names; the string
    annotations of `from __future__ import annotations` (the pydantic parameter models
    the UI form comes from) then name types the copy cannot resolve. Loading the flow
    by its entrypoint there gives the real module, already imported by the forkserver.
    """
    _ENTRYPOINTS[id(flow)] = entrypoint
    copyreg.pickle(type(flow), _reduce_flow)


_ENTRYPOINTS: dict[int, str] = {}


def _reduce_flow(flow: Flow[..., Any]) -> str | tuple[Any, ...]:
    entrypoint = _ENTRYPOINTS.get(id(flow))
    if entrypoint is None:
        return flow.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
    return (load_flow_from_entrypoint, (entrypoint,))


def start_crash_recovery(specs: Sequence[DeploymentSpec]) -> None:
    """Zombie detection and retry of these deployments' runs (prefect_beamline.recovery)."""
    from prefect_beamline.recovery import served_by, start_recovery
    from prefect_beamline.settings import get_settings

    start_recovery(served_by(specs), get_settings())


def serve(
    prefect_file: Path | None = None,
    only: list[str] | None = None,
    *,
    limit: int | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> None:
    """Register and serve the deployments until interrupted."""
    specs = selected_specs(prefect_file, only)
    for module in {flow_module(spec) for spec in specs}:
        importlib.import_module(module)  # fail here, loudly, on a broken entrypoint
    importlib.import_module(WARM_PROCESS)  # the runner's own clients share TLS contexts too
    limit = runner_limit(limit)  # a count, lowered to what fits in memory
    runner = build_runner(specs, limit=limit, poll_seconds=poll_seconds)
    settings = get_settings()  # metrics first: flow-run processes must inherit the folder
    start_runner_metrics(settings.metrics_port, settings.metrics_host)
    trace_served_runs()
    if settings.crash_recovery:
        start_crash_recovery(specs)  # before any flow-run process: it sets their heartbeat
    if warm_start_enabled():
        warm_start(sorted({flow_module(spec) for spec in specs}))
    names = ", ".join(spec.name for spec in specs)
    print(
        f"serving {names} (poll every {poll_seconds} s, warm start {warm_start_enabled()}, "
        f"at most {limit} runs at once)"
    )
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as stop:
        print(f"received {type(stop).__name__}, shutting down")
