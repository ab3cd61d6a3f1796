"""Reporting a running task's progress: what ``context.progress(value)`` calls.

A :class:`ProgressReporter` belongs to one job. Called on the event loop's thread (an async task,
a middleware) it returns the coroutine that records the value, for the caller to await. Called on
any other thread (a sync task runs in a worker thread) it records the value through the event
loop -- ``anyio.from_thread.run`` with the loop's token, so a thread the task started itself may
report too -- and returns once it is recorded, with an awaitable that is already done.

The value is written by the ``progress`` server function only while this worker owns the job's
message, in the same call as its progress event; transient Redis trouble is waited out. Each report
marks the job started too (the server writes the started event once, for whichever mark comes
first), and the finisher sends no mark for a job that reported (``Job.start_sent``). A report made
once the job has its outcome is dropped: its events end with that outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Generator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._events import encode_progress
from ..utils import now_ms
from ._retry import retrying
from ._state import Job, WorkerState


class _Done:
    """An awaitable that is done already."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_DONE = _Done()


class ProgressReporter:
    """Records the progress of one job (see the module doc).

    :param state: the run
    :param job: the job whose task reports
    """

    __slots__ = ("_job", "_state", "_thread", "_token")

    def __init__(self, state: WorkerState, job: Job) -> None:
        self._state = state
        self._job = job
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def __call__(self, value: Any) -> Awaitable[None]:
        if threading.get_ident() == self._thread:
            return self._record(value)
        anyio.from_thread.run(self._record, value, token=self._token)
        return _DONE

    async def _record(self, value: Any) -> None:
        state, job = self._state, self._job
        payload = encode_progress(state.client.codec, value)
        if job.outcome is not None or job.lost:
            return  # the run is over for this worker (an abandoned thread reporting late)
        functions = state.client.functions
        facts = (job.task_id, job.priority, job.msgid, job.fn_name, job.tries)
        # every report marks the task started too (a no-op once it is), so that its started
        # event comes first even while the finisher's mark is on its way; the finisher need not
        # send one any more
        job.start_sent = True
        await retrying(
            state,
            f"cannot record the progress of task {job.task_id}",
            lambda: functions.progress(state.worker.id, facts, job.start_ms, now_ms(), payload),
        )
