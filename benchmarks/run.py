"""One entry point for every benchmark: `python benchmarks/run.py NAME [--json] [--quick]`.

Each benchmark module in this folder exposes `run(quick) -> dict` and `report(dict) -> str`.
`--json` prints one JSON object and nothing else; `--quick` runs a small size (smoke test).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from prefect_beamline.techniques import Benchmark, registry

# Benchmarks of the shared spine; each technique's spec lists its own.
SPINE = {
    "latency": Benchmark(
        "benchmarks.latency", "webhook to flow-run RUNNING through the embedded stack"
    ),
    "slurm": Benchmark("benchmarks.slurm", "what a run pays to compute on Slurm jobs"),
    "gateway": Benchmark(
        "benchmarks.gateway",
        "gateway accepted events/s, p99, burst integrity and drain lag; Zocalo's transport",
    ),
    "burst": Benchmark(
        "benchmarks.burst",
        "30 MX collections announced within a second: runs created, done, per minute",
    ),
}


def benchmarks() -> dict[str, Benchmark]:
    """Every benchmark by name: the spine's and every registered technique's."""
    found = dict(SPINE)
    for spec in registry().values():
        found.update(spec.benchmarks)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    known = benchmarks()
    parser.add_argument("name", choices=[*sorted(known), "all"], help="benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small size, for smoke tests")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for name in sorted(known) if args.name == "all" else [args.name]:
        module = importlib.import_module(known[name].module)
        result = module.run(quick=args.quick)
        print(json.dumps(result) if args.json else module.report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
