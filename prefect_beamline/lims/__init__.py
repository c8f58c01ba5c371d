"""The LIMS core: an ISPyB-compatible subset and its one idempotent writer.

- `engine`: one engine factory (also the gateway outbox's), SQLite WAL and locking.
- `transaction`: transactions, retries, row locks, upserts, ISPyB length checks.
- `schema`: the core ISPyB tables (DataCollection, ProcessingJob, AutoProcProgram, ...).
- `collections`: visits, sessions, grids and files of a data collection.
- `client`: `Lims`, the core writes and reads.

Each technique's own tables and writes live in `prefect_beamline.techniques.<t>.records`.
"""

from prefect_beamline.lims.client import EventAlreadyProcessed, Lims, OpenJob, ProcessingJobSummary
from prefect_beamline.lims.collections import CollectionDescription

__all__ = [
    "CollectionDescription",
    "EventAlreadyProcessed",
    "Lims",
    "OpenJob",
    "ProcessingJobSummary",
]
