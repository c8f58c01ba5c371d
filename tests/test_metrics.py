"""The runner's metrics are summed over its processes: the runner itself (which imported
prometheus_client, through Prefect, long before `serve` chose a folder) and the flow-run
processes its forkserver forks, which exit when their run ends (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    from pathlib import Path
    import prefect  # imports prometheus_client in single-process mode, as in `serve`
    from prefect_beamline import metrics

    def run_chunk():
        with metrics.chunk_timer("mx", "find_spots_in_images"):
            pass
        metrics.record_run_state("mx-processing", "completed")

    if __name__ == "__main__":
        metrics.use_multiprocess_folder(Path(sys.argv[1]))
        context = multiprocessing.get_context("forkserver")
        for _ in range(2):
            child = context.Process(target=run_chunk)
            child.start()
            child.join()
            assert child.exitcode == 0
        metrics.record_run_state("mx-processing", "crashed")  # the runner's crashed hook
    """
)


def test_runner_and_its_forkserver_children_write_one_set_of_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale")  # an earlier runner's: removed
    (tmp_path / "runner.py").write_text(SCRIPT)
    # As under `serve`: no folder in the environment when Prefect is imported.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(folder)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    runs = "beamline_flow_runs_total"
    assert samples[(runs, (("flow", "mx-processing"), ("state", "completed")))] == 2
    assert samples[(runs, (("flow", "mx-processing"), ("state", "crashed")))] == 1
    chunk = (("task", "find_spots_in_images"), ("technique", "mx"))
    assert samples[("beamline_chunk_seconds_count", chunk)] == 2
