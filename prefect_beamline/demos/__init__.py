"""`prefect-beamline demo <technique>`: one synthetic collection through the whole path.

Each technique has a module here exposing `run_demo(workdir, options) -> dict` (the
report `--json` prints) and `print_report(report)`. `common` holds what they share:
posting the DAQ's webhook and waiting for the automation-started run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# technique -> module of prefect_beamline.demos
DEMOS = {"mx": "mx", "tomo": "tomo", "ptycho": "ptycho", "em": "em"}


def demo_module(technique: str) -> ModuleType:
    """The demo module of a technique; KeyError names the ones that exist."""
    if technique not in DEMOS:
        raise KeyError(f"no demo for technique {technique!r} (available: {', '.join(DEMOS)})")
    return importlib.import_module(f"prefect_beamline.demos.{DEMOS[technique]}")
