"""A worker run inside a test's own event loop, on a virtual clock, drained on demand.

:func:`open_harness` installs the clock in the caller's context (:mod:`._clock`), so the test's
producer code and every duty of the worker read it, then starts the worker's run in a task group
it owns; leaving the block stops the run gracefully (cancels it when the block raised) and
uninstalls the clock, so nothing outlives the block.

:meth:`Harness.drain` waits on the run's own progress signal
(:meth:`~._runtime._state.WorkerState.progress_after`: an outcome recorded, a cron pass made),
never on a timer. Each round reads the progress count, moves the tasks due by the clock into
their streams (the ``promote`` server function, as the scheduler does), then counts the streams'
entries (the ``counts`` server function: an entry stays in its stream until its outcome is
recorded, so the count covers queued, claimed and running tasks). The queue is drained when no
entry is left, the worker holds no job, and the progress count has not moved since the round
began: an outcome recorded meanwhile (which may have released a dependent or scheduled a retry
due now) starts another round instead. With cron jobs, a round first waits until the cron duty
has fired every occurrence due by the clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from ._clock import VirtualClock, use_clock
from ._runtime._scheduler import PROMOTE_BATCH
from ._runtime._state import WorkerState
from .types import StreaqError
from .utils import now_ms, to_seconds
from .worker import Worker

#: how long :meth:`Harness.drain` waits by default (seconds of real time)
DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class DrainSummary:
    """What the worker did since the previous :meth:`Harness.drain` (or since the harness
    started) until this one returned, counted as ``Worker.counters`` are.

    :param completed: tasks that succeeded
    :param failed: tasks that failed (errors, timeouts, expiries, dead letters)
    :param retried: tries that ended in a retry
    :param aborted: tasks aborted
    """

    completed: int
    failed: int
    retried: int
    aborted: int


class Harness:
    """A worker running in the test's event loop on a virtual clock; made by :func:`open_harness`.

    :param worker: the running worker
    :param clock: the clock the worker and the test read
    """

    def __init__(self, worker: Worker[Any], clock: VirtualClock) -> None:
        #: the worker being run
        self.worker = worker
        #: the virtual clock of the worker and of the test's code
        self.clock = clock
        self._counted = dict(worker.counters)

    def __repr__(self) -> str:
        return f"<Harness worker={self.worker.id} clock={self.clock.now().isoformat()}>"

    def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward; what comes due runs on the next :meth:`drain`.

        :param delta: how far, a ``timedelta`` or seconds
        :raises ValueError: for a negative ``delta``
        """
        self.clock.advance(delta)

    def _state(self) -> WorkerState:
        state = self.worker._run.state
        if state is None:
            raise StreaqError("the worker of this harness is not running (its block has ended)")
        return state

    async def drain(self, timeout: timedelta | float = DRAIN_TIMEOUT) -> DrainSummary:
        """Run everything due by the clock, and whatever that makes due, until the queue rests.

        It returns once no task of the queue is queued, claimed or running, no delayed task or
        cron occurrence is due by the clock, and no outcome is left to record; what it ran
        released its dependents and ``then`` links, which ran too when not delayed. Delayed tasks,
        retries and cron occurrences due later are left for :meth:`advance`, tasks of a paused
        function at their gate. A task that runs on, or tasks another worker of the queue holds,
        keep it from resting: it times out.

        :param timeout: the longest wait, in real time (a ``timedelta`` or seconds)
        :return: what the worker did since the previous drain
        :raises TimeoutError: when the queue does not rest within ``timeout``
        :raises StreaqError: when the harness's block has ended
        """
        state = self._state()
        worker = self.worker
        has_cron = any(task.crontab for task in worker.registry.values())
        functions = state.client.functions
        queued = 0
        seconds = to_seconds(timeout)
        try:
            with anyio.fail_after(seconds):
                while True:
                    seen = state.progress
                    now = now_ms()
                    if has_cron and state.cron_upto < now:
                        await state.progress_after(seen)
                        continue
                    while (await functions.promote(now, PROMOTE_BATCH))[0] >= PROMOTE_BATCH:
                        pass
                    counts = await functions.counts(worker.priorities)
                    queued = sum(counts[: len(worker.priorities)])
                    if not queued and not state.jobs and state.progress == seen:
                        break
                    await state.progress_after(seen)
        except TimeoutError:
            raise TimeoutError(
                f"the queue {worker.queue_name!r} did not drain within {seconds}s: "
                f"{queued} task(s) in its streams, {len(state.jobs)} held by this worker "
                "(running on, or held by another worker?)"
            ) from None
        before, after = self._counted, dict(worker.counters)
        self._counted = after
        return DrainSummary(
            completed=after["completed"] - before["completed"],
            failed=after["failed"] - before["failed"],
            retried=after["retried"] - before["retried"],
            aborted=after["aborted"] - before["aborted"],
        )


@asynccontextmanager
async def open_harness(
    worker: Worker[Any], *, clock: VirtualClock | None = None
) -> AsyncIterator[Harness]:
    """Run ``worker`` in the current event loop, on a virtual clock, for the ``async with`` block.

    The clock is installed in the caller's context first, so tasks the block enqueues and the
    worker's duties read the same time; the worker does not handle signals while it runs here.
    Leaving the block stops the run gracefully (as SIGTERM would), or cancels it when the block
    raised, and waits for it to end.

    :param worker: the worker to run (not running yet); it connects to its own Redis
    :param clock: the clock to run on; a new :class:`VirtualClock` at the current time by default
    :return: the harness, to :meth:`~Harness.advance` the clock and :meth:`~Harness.drain`
    :raises StreaqError: when the worker is running already
    """
    if worker._run.state is not None:
        raise StreaqError(f"worker {worker.id} is running already: open_harness runs it itself")
    harness = Harness(worker, clock if clock is not None else VirtualClock())
    handle_signals, worker.handle_signals = worker.handle_signals, False
    error: BaseException | None = None
    try:
        with use_clock(harness.clock):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run_async)
                try:
                    yield harness
                except BaseException as exc:
                    # raised after the group, not from it: the test sees its own error, not
                    # an exception group around it
                    error = exc
                    tg.cancel_scope.cancel()
                else:
                    state = worker._run.state
                    if state is not None:
                        state.request_stop()
        if error is not None:
            raise error
    finally:
        worker.handle_signals = handle_signals
