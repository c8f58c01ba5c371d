"""The embedded single-machine stack: Prefect server, gateway and runner as child processes.

Used by `prefect-beamline demo`, the end-to-end tests and the latency benchmark, so all
three exercise the same real parts a facility runs: a Prefect server (SQLite unless
`PREFECT_API_URL` names one), the gateway, and `prefect-beamline serve` running the
deployments of `prefect.yaml` with their triggers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from prefect_beamline.shared_server import (
    ensure_reachable,
    ensure_unclaimed,
    remove_deployments,
)

if TYPE_CHECKING:
    from prefect_beamline.lims import Lims

SERVER_START_TIMEOUT_S = 120.0
PROCESS_START_TIMEOUT_S = 90.0
# Prefect's workers and runner poll for scheduled runs every 10 s by default; 1 s is the
# smallest (whole-second) setting. `prefect-beamline serve` polls every 0.25 s itself.
FAST_POLLING = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    # A run held by a deployment's concurrency limit (em-movie) retries after this,
    # not Prefect's default 30 s: a queued movie starts soon after a slot frees.
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}

# `prefect server start`, with SQLite transactions that wait for the write lock instead of
# failing into a 2 s client retry (see prefect_beamline/prefect_server.py).
PREFECT_SERVER_COMMAND = ["-m", "prefect_beamline.prefect_server"]


# Crash recovery (prefect_beamline.recovery) at test speed: heartbeats at Prefect's
# 30 s minimum, a zombie after 60 s without one, proactive automations evaluated every
# second, crashed runs looked for every second. Production: docs/operations.md.
FAST_RECOVERY = {
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    "PREFECT_BEAMLINE_ZOMBIE_AFTER_SECONDS": "60",
    "PREFECT_BEAMLINE_RECOVERY_SECONDS": "1",
    "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
}


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None) -> None:
    """Poll `url` until it answers 200; fail early with the log if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


@dataclass
class ManagedProcess:
    """A child process with its log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def start_process(
    name: str, args: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None
) -> ManagedProcess:
    """Start `args` (in `cwd`, else ours) in its own process group, output to
    `<log_dir>/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}.log"
    handle = log_file.open("wb")
    process = subprocess.Popen(
        args,
        env=dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=cwd,
    )
    handle.close()
    return ManagedProcess(name, process, log_file)


def cli(*args: str) -> list[str]:
    """Command line of `prefect-beamline <args>` with this interpreter."""
    return [sys.executable, "-m", "prefect_beamline.cli", *args]


@dataclass
class LocalStack:
    """Handles to a running embedded stack, as `embedded_stack()` yields it."""

    workdir: Path
    api_url: str
    gateway_url: str
    gateway_token: str
    env: dict[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def operator_token(self) -> str:
        """The token of the gateway's operator endpoints (outbox, detailed health)."""
        return self.env["PREFECT_BEAMLINE_OPERATOR_TOKEN"]

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def lims(self) -> Lims:
        """The LIMS the stack's flows write."""
        from prefect_beamline.lims import Lims

        return Lims(self.env["PREFECT_BEAMLINE_LIMS_URL"])

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)

    @property
    def runner_metrics_url(self) -> str | None:
        """The runner's Prometheus endpoint, when the stack was started with `observe`."""
        port = self.env.get("PREFECT_BEAMLINE_METRICS_PORT")
        return f"http://127.0.0.1:{port}/metrics" if port else None

    @property
    def trace_file(self) -> Path | None:
        """The JSON-lines file every process writes its spans to, with `observe`."""
        path = self.env.get("PREFECT_BEAMLINE_TRACE_FILE")
        return Path(path) if path else None


# Settings of ours the stack takes from the caller's environment when set (a facility's
# LIMS and outbox databases); every other PREFECT_BEAMLINE_ variable is the stack's own.
KEPT_SETTINGS = ("PREFECT_BEAMLINE_LIMS_URL", "PREFECT_BEAMLINE_OUTBOX_URL")


def stack_environment(
    workdir: Path,
    api_url: str,
    token: str,
    gateway_port: int,
    *,
    data_roots: Sequence[Path] | None = None,
) -> dict[str, str]:
    """Environment shared by every process of the stack (one LIMS, one outbox: the
    caller's PREFECT_BEAMLINE_LIMS_URL / _OUTBOX_URL if set, else SQLite in `workdir`).

    Closed like a facility's: a random operator token beside the DAQ's `token`, and data
    accepted only under `data_roots` (default `<workdir>/data`, where the demos write).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_BEAMLINE_")}
    env.update(FAST_POLLING)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(workdir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO"),
            "PREFECT_BEAMLINE_HOME": str(workdir / "beamline"),
            "PREFECT_BEAMLINE_LIMS_URL": f"sqlite:///{workdir / 'beamline' / 'lims.db'}",
            "PREFECT_BEAMLINE_OUTBOX_URL": f"sqlite:///{workdir / 'beamline' / 'gateway.db'}",
            "PREFECT_BEAMLINE_GATEWAY_TOKEN": token,
            "PREFECT_BEAMLINE_OPERATOR_TOKEN": secrets.token_urlsafe(16),
            "PREFECT_BEAMLINE_DATA_ROOTS": os.pathsep.join(
                str(root) for root in (data_roots or [workdir / "data"])
            ),
            "PREFECT_BEAMLINE_GATEWAY_PORT": str(gateway_port),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(workdir / "prefect-home" / "storage"),
        }
    )
    env.update({name: os.environ[name] for name in KEPT_SETTINGS if os.environ.get(name)})
    env.update(FAST_RECOVERY)
    return env


def start_prefect_server(workdir: Path, env: Mapping[str, str], port: int) -> ManagedProcess:
    """A Prefect server answering on 127.0.0.1:`port`: on SQLite in `workdir`, or on the
    database PREFECT_SERVER_DATABASE_CONNECTION_URL names in `env` (PostgreSQL, as a
    facility runs it; see docs/operations.md)."""
    server_env = dict(env)
    server_env.setdefault(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        f"sqlite+aiosqlite:///{workdir / 'prefect-home' / 'prefect.db'}",
    )
    server = start_process(
        "prefect-server",
        [
            sys.executable,
            *PREFECT_SERVER_COMMAND,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        server_env,
        workdir / "logs",
    )
    wait_for_http(f"http://127.0.0.1:{port}/api/health", SERVER_START_TIMEOUT_S, server.process)
    return server


@contextlib.contextmanager
def embedded_stack(
    workdir: Path,
    *,
    serve: bool = True,
    gateway: bool = True,
    api_url: str | None = None,
    compute_block: str | None = None,
    data_roots: Sequence[Path] | None = None,
    observe: bool = False,
    settings: Mapping[str, str] | None = None,
) -> Iterator[LocalStack]:
    """Start what is missing of server, gateway and runner; stop all of it on exit.

    An existing server is used when `api_url` (or PREFECT_API_URL) names one. With
    `compute_block`, the runner's flows compute where that Beamline Compute block says
    (saved as local threads when it does not exist yet), so an operator, or a test, can
    move them to a Dask cluster by editing the block. Data is accepted under
    `data_roots` (default `<workdir>/data`). With `observe`, the runner exposes its
    metrics on a free port and every process writes its spans to `traces.jsonl`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    api_url = api_url or os.environ.get("PREFECT_API_URL")
    server_port = free_port()
    gateway_port = free_port()
    token = secrets.token_urlsafe(16)
    own_server = api_url is None
    api_url = api_url or f"http://127.0.0.1:{server_port}/api"
    env = stack_environment(workdir, api_url, token, gateway_port, data_roots=data_roots)
    if compute_block:
        env["PREFECT_BEAMLINE_COMPUTE_BLOCK"] = compute_block
    env.update(settings or {})  # more PREFECT_BEAMLINE_ settings of every process
    if observe:
        env["PREFECT_BEAMLINE_METRICS_PORT"] = str(free_port())
        env["PREFECT_BEAMLINE_TRACE_FILE"] = str(workdir / "traces.jsonl")
    Path(env["PREFECT_BEAMLINE_HOME"]).mkdir(parents=True, exist_ok=True)
    stack = LocalStack(workdir, api_url, f"http://127.0.0.1:{gateway_port}", token, env)
    registered_on_shared_server: list[str] = []
    try:
        if own_server:
            stack.processes.append(start_prefect_server(workdir, env, server_port))
        else:
            ensure_reachable(api_url)
        if compute_block:
            ensure_compute_block(api_url, compute_block)
        if serve:
            names = served_deployment_names()
            if not own_server:
                ensure_unclaimed(api_url, names)  # never replace a facility's deployments
                registered_on_shared_server = names
                env["PREFECT_BEAMLINE_CRASH_RECOVERY"] = "false"  # nor its automations
            runner = start_process("serve", cli("serve"), env, workdir / "logs")
            stack.processes.append(runner)
            wait_for_deployments(api_url, names, runner)
        if gateway:
            gateway_process = start_process(
                "gateway", cli("gateway", "--port", str(gateway_port)), env, workdir / "logs"
            )
            stack.processes.append(gateway_process)
            wait_for_http(
                f"{stack.gateway_url}/health", PROCESS_START_TIMEOUT_S, gateway_process.process
            )
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.stop()
        if registered_on_shared_server:
            remove_deployments(api_url, registered_on_shared_server)


def ensure_compute_block(api_url: str, name: str) -> None:
    """Save a local-threads Compute block called `name` unless the server has one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_beamline.blocks.compute import Compute

    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            Compute.load(name)
        except ValueError:
            Compute().save(name)


def served_deployment_names() -> list[str]:
    """Names of the deployments `prefect-beamline serve` registers: all of prefect.yaml."""
    from prefect_beamline.deployments import find_prefect_yaml, read_deployment_specs

    return [spec.name for spec in read_deployment_specs(find_prefect_yaml())]


def wait_for_deployments(
    api_url: str,
    names: list[str],
    runner: ManagedProcess,
    timeout_s: float = PROCESS_START_TIMEOUT_S,
) -> None:
    """Block until the runner has registered each named deployment and its automations."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending and time.monotonic() < deadline:
        if runner.process.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{runner.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(
                f"{api_url}/deployments/filter",
                json={"deployments": {"name": {"any_": pending}}},
                timeout=5.0,
            )
            for deployment in response.json() if response.status_code == 200 else []:
                owned = httpx.get(
                    f"{api_url}/automations/related-to/prefect.deployment.{deployment['id']}",
                    timeout=5.0,
                )
                if owned.status_code == 200 and owned.json() and deployment["name"] in pending:
                    pending.remove(deployment["name"])
        if pending:
            time.sleep(0.5)
    if pending:
        raise TimeoutError(f"deployments not registered in time: {pending}\n{runner.log_tail()}")
