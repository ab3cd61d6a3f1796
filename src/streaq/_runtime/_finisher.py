"""Recording what became of claimed messages: started marks and outcomes, in batches.

The runners (and the listener, for an aborted prefetched job) report to the finisher through one
unbounded channel (see :mod:`._state`); it records whatever has accumulated in one ``finish`` call:
first the tasks that started (their status becomes *running*, and each gets its started event),
then the outcomes. A mark whose job already has its outcome is left out, since the outcome follows
in the same or a later call -- unless events are on: the server then emits the job's started event
with its outcome.

An outcome is never dropped: transient Redis trouble is waited out (:func:`~._retry.retrying`),
and the call is safe to repeat, since the server applies an outcome only while this worker owns the
message. A call the server refuses for good (an error reply that is not transient) must not hold
up the other outcomes: the batch is split, and an outcome that cannot be recorded on its own is
dead-lettered with the reason, so its waiters still get a result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._dlq import REASON_UNRECORDABLE
from .._schema import RETRY
from .._words import plural
from ..types import StreaqError
from ..utils import now_ms
from ._crashpoints import ARMED, crashpoint
from ._poison import Poison, dead_letter
from ._retry import retrying
from ._state import Job, Report, WorkerState

logger = logging.getLogger("streaq")

FINISH_BATCH = 200


async def finisher(state: WorkerState, reports: MemoryObjectReceiveStream[Report]) -> None:
    """Record reports in batches until every sender closed the channel."""
    async with reports:
        async for first in reports:
            batch = [first]
            while len(batch) < FINISH_BATCH:
                try:
                    batch.append(reports.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await record(state, batch)


async def record(state: WorkerState, reports: Sequence[Report]) -> None:
    """Record the pending starts and the outcomes of ``reports``, then forget their jobs."""
    # the lines of these tasks come out before their results do
    state.log.flush()
    started: list[str | int] = []
    starts, state.starts = state.starts, []
    events = state.worker.events_maxlen > 0
    for job in starts:
        # a job with an outcome needs no mark, as the outcome is recorded now or soon after --
        # but for its started event; one whose outcome is not this worker's gets none
        if job.lost or job.start_sent:
            continue
        if job.outcome is not None and not (events and job.outcome[0]):
            continue
        job.start_sent = True
        started += [job.priority, job.task_id, job.fn_name, job.tries, job.start_ms]
    jobs = [report for report in reports if report is not None]
    todo = [job for job in jobs if job.outcome is not None and job.outcome[0] and not job.lost]
    if started or todo:
        await _apply(state, started, todo)
    for job in jobs:
        state.recorded(job)


async def _apply(state: WorkerState, started: list[str | int], todo: list[Job]) -> None:
    try:
        await retrying(
            state, f"cannot record {len(todo)} results", lambda: _finish(state, started, todo)
        )
    except Exception as e:
        if len(todo) > 1:
            half = len(todo) // 2
            await _apply(state, started, todo[:half])
            await _apply(state, [], todo[half:])
        elif todo:
            await _unrecordable(state, todo[0], e)
        else:
            logger.warning("cannot mark %s as started: %s", plural(len(started) // 5, "task"), e)


async def _finish(state: WorkerState, started: list[str | int], todo: list[Job]) -> None:
    args: list[str | bytes | int] = []
    for job in todo:
        assert job.outcome is not None
        kind, a, b, c = job.outcome
        args += [job.task_id, job.priority, job.msgid, kind, a, b, c]
    if ARMED:
        crashpoint("before_finish")
    _, released, skipped = await state.client.functions.finish(
        state.worker.id, now_ms(), started, args
    )
    if ARMED:
        crashpoint("during_release", released > 0)
        crashpoint("during_retry", any(j.outcome[0] == RETRY for j in todo if j.outcome))
        crashpoint("during_finish")
    if skipped:
        logger.warning(
            "%s not recorded: another worker took over their tasks meanwhile",
            plural(skipped, "outcome"),
        )


async def _unrecordable(state: WorkerState, job: Job, error: Exception) -> None:
    logger.error("the outcome of task %s cannot be recorded", job.task_id, exc_info=error)
    poison = Poison(
        f"{REASON_UNRECORDABLE}: {error}",
        StreaqError(f"the outcome of task {job.task_id} cannot be recorded: {error}"),
    )
    try:
        await dead_letter(state, job, state.worker.registry.get(job.fn_name), poison)
    except Exception as e:
        # left in this worker's pending list: it is taken up again after idle_timeout, and
        # dead-lettered once its deliveries exceed max_tries
        logger.error("task %s cannot be dead-lettered either: %s", job.task_id, e)
