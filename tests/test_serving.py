"""The warm runner of `prefect-beamline serve`: flows travel as entrypoints, runs fork
from a preloaded forkserver, and a flow run started that way completes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import cloudpickle

from prefect_beamline.flows.mx import MXParameters, process_mx
from prefect_beamline.serving import pickle_by_entrypoint


def test_served_flow_is_pickled_as_its_entrypoint_with_resolvable_parameter_types() -> None:
    pickle_by_entrypoint(process_mx, "prefect_beamline.flows.mx:process_mx")
    payload = cloudpickle.dumps(process_mx)
    assert b"process_mx" in payload and len(payload) < 1000  # a reference, not the code
    loaded = cloudpickle.loads(payload)
    assert loaded.fn is process_mx.fn
    assert typing.get_type_hints(loaded.fn)["parameters"] == MXParameters


def test_warm_start_hands_prefect_a_preloaded_forkserver(tmp_path: Path) -> None:
    """Prefect's flow engine asks for a spawn context; after warm_start it gets the
    forkserver, whose children are forked by the server with the flow modules loaded."""
    script = textwrap.dedent(
        """
        import os, sys
        import prefect.flow_engine
        from prefect_beamline.serving import warm_start

        def report(serve_pid):
            import gc
            import prefect.client.orchestration as orchestration
            from prefect_beamline.lims.schema import Base
            from prefect_beamline.warm_process import _SharedTLSContexts

            loaded = "prefect_beamline.flows.mx" in sys.modules
            print("child", os.getppid() != serve_pid, loaded, flush=True)
            # What warm_process did once in the forkserver, inherited by the fork.
            configured = all(mapper.configured for mapper in Base.registry.mappers)
            shared = isinstance(orchestration.ssl, _SharedTLSContexts)
            print("warm", configured, shared, gc.get_freeze_count() > 10_000, flush=True)

        if __name__ == "__main__":
            warm_start(["prefect_beamline.flows.mx"])
            context = prefect.flow_engine.multiprocessing.get_context("spawn")
            print("method", context.get_start_method(), flush=True)
            process = context.Process(target=report, args=(os.getpid(),))
            process.start()
            process.join(120)
            print("exit", process.exitcode, flush=True)
        """
    )
    (tmp_path / "warm.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "warm.py"], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.stdout.split("\n")[:4] == [
        "method forkserver",
        "child True True",
        "warm True True True",
        "exit 0",
    ], done.stdout + done.stderr
