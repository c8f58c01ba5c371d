"""The Dask task runner the Compute block gives: prefect-dask's, plus one step at the end.

A chunk that ran on a Dask worker queues its Prefect logs and events in that worker, and
Prefect sends them in batches every couple of seconds. A cluster started for one run (Slurm
jobs) is cancelled the moment the run's chunks are done, which killed workers before they
sent the last batch: the chunks' log lines were missing from the UI. The runner asks every
worker to send what it holds before the cluster closes.
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect_dask import DaskTaskRunner

# Longest a worker may take to send its queued logs and events.
SEND_TIMEOUT_S = 10.0


async def send_queued_prefect_records() -> None:
    """On a Dask worker: send the Prefect logs and events it still holds."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        sent = service.drain_all(timeout=SEND_TIMEOUT_S)
        if inspect.isawaitable(sent):
            await sent


class DrainingDaskTaskRunner(DaskTaskRunner):
    """`DaskTaskRunner` whose workers send their queued logs and events before it closes."""

    def __exit__(self, *exc_info: Any) -> None:
        if self._client is not None:
            try:
                self._client.run(send_queued_prefect_records)
            except Exception as error:  # the run's results are in; only log lines are at stake
                self.logger.warning("Dask workers could not send their Prefect logs: %s", error)
        super().__exit__(*exc_info)
