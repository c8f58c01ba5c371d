"""The `beamline` worker type: a process worker that starts flow runs warm.

Prefect's process worker starts each flow run as `python -m prefect.engine`, a new
interpreter that imports Prefect, numpy, h5py and the flow module before the run reports
RUNNING: 13–21 s from webhook to RUNNING under load, against 2–3 s for
`prefect-beamline serve` (docs/benchmarks.md). This worker does what `serve` does, for
deployments registered on a work pool (`prefect deploy --all`) and on any machine with
the package installed:

- it polls its work pool every `PREFECT_BEAMLINE_WORKER_POLL_SECONDS` (0.25 s);
- it loads each run's flow by the deployment's entrypoint, a module path in the
  installed package, and forks the run from a forkserver that imported Prefect, numpy,
  h5py and the pool's flow modules once (`serving.warm_start`).

Each run is still its own process, watched by Prefect's run executor: a run whose
process dies is CRASHED, and cancellation is Prefect's. A deployment whose entrypoint is
a file path, or whose job variables set a `command`, runs as the process worker runs it.
Prefect finds this class through the `prefect.collections` entry point, so both
`prefect worker start --type beamline` and `prefect-beamline worker` start it.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.flow_engine import run_flow_in_subprocess
from prefect.flows import Flow, load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult
from pydantic import PrivateAttr

from prefect_beamline.capacity import runner_limit
from prefect_beamline.metrics import start_runner_metrics
from prefect_beamline.pull import work_in_beamline_home
from prefect_beamline.serving import entrypoint_module, warm_flow, warm_start, warm_start_enabled
from prefect_beamline.settings import BeamlineSettings
from prefect_beamline.tracing import in_announced_trace

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.runner._control_channel import ControlChannel

WORKER_TYPE = "beamline"


def is_module_entrypoint(entrypoint: str | None) -> bool:
    """True for `package.module:function`, False for `flows/mx.py:process_mx`."""
    if not entrypoint:
        return False
    module, _, function = entrypoint.rpartition(":")
    return bool(module and function) and not module.endswith(".py") and "/" not in module


class BeamlineJobConfiguration(ProcessJobConfiguration):
    """The process worker's job configuration, plus the deployment's entrypoint (which
    Prefect reads while preparing it), so starting a run needs no second lookup."""

    _entrypoint: str | None = PrivateAttr(default=None)

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )
        self._entrypoint = deployment.entrypoint if deployment is not None else None


class ForkedRunStarter:
    """Starts one flow run in a child process (`run_flow_in_subprocess`, which the warm
    start turns into a fork of the preloaded forkserver), with the job's environment.

    Prefect's `DirectSubprocessStarter` for the worker: it takes no environment.
    """

    def __init__(
        self,
        flow: Flow[..., Any],
        env: dict[str, str | None],
        control_channel: ControlChannel,
    ) -> None:
        self._flow = flow
        self._env = env  # the job's, with PREFECT__DEPLOYMENT_NAME and the run's id
        self._control_channel = control_channel

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        env = dict(self._env)
        registered = False
        # Without a loopback listener cancellation falls back to killing the process.
        with contextlib.suppress(RuntimeError):
            port, token = self._control_channel.register(flow_run.id)
            env.update(PREFECT__CONTROL_PORT=str(port), PREFECT__CONTROL_TOKEN=token)
            registered = True
        handed_off = False
        try:
            process = run_flow_in_subprocess(
                self._flow, flow_run=in_announced_trace(flow_run), env=env
            )
            task_status.started(ProcessHandle(process))
            handed_off = True
            await anyio.to_thread.run_sync(process.join)
        except BaseException:
            if registered and not handed_off:
                self._control_channel.unregister(flow_run.id)
            raise


class BeamlineWorker(ProcessWorker):
    """Process worker whose flow runs fork from a preloaded interpreter (see module doc)."""

    type = WORKER_TYPE
    job_configuration = BeamlineJobConfiguration
    _display_name = "Beamline (warm process)"
    _description = (
        "Runs each flow run as its own process, forked from an interpreter that has "
        "Prefect and the flow modules loaded (prefect-beamline): runs start in well under "
        "a second. Deployments need a module-path entrypoint in the installed package."
    )

    def __init__(self, *args: Any, poll_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poll_seconds = poll_seconds or BeamlineSettings().worker_poll_seconds
        self._flows: dict[str, Flow[..., Any]] = {}
        self._executors: FlowRunExecutorContext | None = None

    async def start(
        self,
        run_once: bool = False,
        with_healthcheck: bool = False,
        printer: Callable[..., None] = print,
    ) -> None:
        """Prefect's worker loops, polling the work pool every `poll_seconds`."""
        with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: self.poll_seconds}):
            await super().start(run_once, with_healthcheck, printer)

    async def setup(self) -> None:
        # Entered first, so on shutdown it outlives the runs (torn down in reverse).
        self._executors = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        # A count, lowered to what fits in memory (before Prefect builds its limiter).
        self._limit = await anyio.to_thread.run_sync(runner_limit, self._limit)
        await super().setup()
        # Before any run's process: they inherit the metrics folder.
        settings = BeamlineSettings()
        start_runner_metrics(settings.metrics_port, settings.metrics_host)
        if warm_start_enabled():
            # Warm runs skip pull steps: do what prefect.yaml's pull step does, once, before
            # the forkserver (whose children inherit this folder) starts.
            work_in_beamline_home()
            modules = await self._pool_flow_modules()
            warm_start(modules)
            self._logger.info("Forkserver preloaded with %s", ", ".join(modules) or "Prefect")

    async def _pool_flow_modules(self) -> list[str]:
        """The importable flow modules of the pool's deployments, imported here too.

        The forkserver stops at a module that raises anything but ImportError, so only
        modules this process imported cleanly are preloaded there.
        """
        deployments = await self.client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name]))
        )
        modules = []
        for module in sorted(
            {
                entrypoint_module(d.entrypoint or "")
                for d in deployments
                if is_module_entrypoint(d.entrypoint)
            }
        ):
            try:
                importlib.import_module(module)
            except Exception as error:
                self._logger.warning("Not preloading %s: %s", module, error)
            else:
                modules.append(module)
        return modules

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        entrypoint = getattr(configuration, "_entrypoint", None)
        if (
            self._executors is None
            or configuration._command_configured
            or entrypoint is None
            or not is_module_entrypoint(entrypoint)
        ):
            return await super().run(flow_run, configuration, task_status)
        flow = await self._flow(entrypoint)
        starter = ForkedRunStarter(flow, configuration.env, self._executors.control_channel)
        executor = self._executors.create_executor(
            flow_run, starter, resolve_flow=self._resolve_flow, propose_submitting=False
        )
        execution: FlowRunExecutionResult | None = None

        async def execute(
            *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            nonlocal execution
            execution = await executor.submit(task_status=task_status)

        async with anyio.create_task_group() as group:
            handle: ProcessHandle = await group.start(execute)
            if handle.pid is None:
                raise RuntimeError("Flow run process has no PID")
            (task_status or anyio.TASK_STATUS_IGNORED).started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError(f"flow run {flow_run.id} did not start")
        return ProcessWorkerResult(
            status_code=execution.status_code, identifier=str(execution.handle.pid)
        )

    async def _deployment_entrypoint(self, flow_run: FlowRun) -> str | None:
        if flow_run.deployment_id is None:
            return None
        return (await self.client.read_deployment(flow_run.deployment_id)).entrypoint

    async def _flow(self, entrypoint: str) -> Flow[..., Any]:
        """The flow at `entrypoint`, imported once (in a thread: imports block)."""
        if entrypoint not in self._flows:
            self._flows[entrypoint] = await anyio.to_thread.run_sync(warm_flow, entrypoint)
        return self._flows[entrypoint]

    async def _resolve_flow(self, flow_run: FlowRun) -> Flow[..., Any]:
        """The run's flow, for its crashed and cancellation hooks."""
        entrypoint = await self._deployment_entrypoint(flow_run)
        if entrypoint is not None and is_module_entrypoint(entrypoint):
            return await self._flow(entrypoint)
        return await load_flow_from_flow_run(flow_run)
