"""Group commit: concurrent requests' events committed together by one writer thread.

Each accepted request hands its event to `GroupCommitWriter.submit` and awaits the
commit. While one transaction is being committed (SQLite `synchronous=FULL`: an fsync),
the next requests queue up; the writer then commits all of them in one transaction
(`Outbox.add_many`) and answers each. So every 202 still follows its own durable commit,
but a burst costs one fsync per group instead of one per request, and requests never
fight over the database's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from prefect_beamline.gateway.outbox import Admission, Outbox, Submission

MAX_GROUP = 512
# Announcements waiting for their commit at which the door counts as saturated: ~1 at
# 500 events/s, 30-64 with 64 clients posting as fast as they are answered.
BUSY_WAITING = 16


class GroupCommitWriter:
    """The gateway's only writer of new events; started on first use in a running loop."""

    def __init__(self, outbox: Outbox, *, max_pending: int | None = None) -> None:
        self.outbox = outbox
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox-writer")
        self._queue: asyncio.Queue[tuple[Submission, asyncio.Future[Admission]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.waiting = 0  # submissions not yet answered

    def busy(self) -> bool:
        """Whether announcements are queueing for their commit: a burst, which the
        drainer gives way to (`emitter.DOOR_DEFER_S`)."""
        return self.waiting >= BUSY_WAITING

    async def submit(self, submission: Submission) -> Admission:
        """Commit `submission` with whatever else is waiting; raises what the commit
        raised (the database is unavailable)."""
        queue = self._started()
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        queue.put_nowait((submission, future))
        self.waiting += 1
        try:
            return await future
        finally:
            self.waiting -= 1

    def _started(self) -> asyncio.Queue[tuple[Submission, asyncio.Future[Admission]]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue), name="outbox-writer")
        return self._queue

    async def _run(
        self, queue: asyncio.Queue[tuple[Submission, asyncio.Future[Admission]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await queue.get()]
            while not queue.empty() and len(group) < MAX_GROUP:
                group.append(queue.get_nowait())
            submissions = [submission for submission, _ in group]
            try:
                admissions = await loop.run_in_executor(
                    self._executor, partial(self._commit, submissions)
                )
            except Exception as error:
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), admission in zip(group, admissions, strict=True):
                if not future.done():
                    future.set_result(admission)

    def _commit(self, submissions: list[Submission]) -> list[Admission]:
        return self.outbox.add_many(submissions, max_pending=self.max_pending)

    async def stop(self) -> None:
        """Finish the task (requests still waiting get an error) and the thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False)
