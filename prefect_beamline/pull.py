"""The pull step of every deployment in prefect.yaml: run flows in the beamline home.

With no pull step, `prefect deploy` records the folder it ran in as each run's working
directory; on a worker without that folder the run crashes before the flow starts (no
LIMS job, no failure event). Our flows are imported from the installed package and write
under the collection's processing folder, so a run only needs a working directory that
exists on every machine: PREFECT_BEAMLINE_HOME (made if missing).
"""

from __future__ import annotations

import os

from prefect_beamline.settings import get_settings


def work_in_beamline_home() -> dict[str, str]:
    """Change to PREFECT_BEAMLINE_HOME; Prefect then runs the flow there."""
    home = get_settings().home.resolve()  # get_settings makes the folder
    os.chdir(home)
    return {"directory": str(home)}
