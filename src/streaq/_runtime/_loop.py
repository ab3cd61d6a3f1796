"""The worker's run: one task group owning every duty, and an orderly shutdown.

Duties, one module each: the *reader* claims messages into a channel (:mod:`._reader`); *runners*
(``concurrency`` of them, below) execute jobs (:mod:`._runner`); the *finisher* records started
marks and outcomes in batches, one server call for many tasks (:mod:`._finisher`); the *lease
keeper* refreshes the idle time of every claimed message, running or prefetched (:mod:`._leases`);
the *reclaimer* takes over messages of workers that stopped renewing theirs (:mod:`._reclaimer`);
the *scheduler* moves due delayed tasks into the streams (:mod:`._scheduler`); the *listener*
receives abort requests and wake-ups (:mod:`._listener`); the *signal* duty turns SIGINT/SIGTERM
into a graceful stop (:mod:`._signals`); cron jobs fire from :mod:`._cron_fire`. A duty that fails
is logged and restarted (:func:`~._retry.keep_serving`): Redis trouble never ends a run.

Shutdown: the reader stops claiming; messages claimed but not started are handed back at once;
running jobs get ``grace_period`` to finish, then their scopes are cancelled and they are handed
back; the finisher records every outcome before the run returns. When the run itself is cancelled,
whatever is left is handed back under a shield. Last, the worker *retires* (a server call): any
message still in its pending lists -- delivered by a read whose reply it never got -- is handed
back, and its consumers and heartbeat are deleted.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._liveness import heartbeat_interval
from .._words import plural
from ..utils import now_ms, to_seconds
from ._banner import banner
from ._cron_fire import fire_cron_jobs
from ._finisher import finisher, record
from ._leases import LeaseKeeper
from ._listener import listener
from ._reader import Reader
from ._reclaimer import Reclaimer
from ._retry import keep_serving
from ._runner import Runner
from ._scheduler import scheduler
from ._signals import signals
from ._state import Job, Report, WorkerState

if TYPE_CHECKING:
    from ..worker import Worker

logger = logging.getLogger("streaq")

#: a runner yields to the event loop at least once per this many jobs taken without waiting
CHECKPOINT_EVERY = 8
#: how long a stopping or cancelled run may spend recording what is left (seconds)
LEFTOVER_TIMEOUT = 5.0


async def _run_jobs(
    state: WorkerState,
    runner: Runner,
    jobs: MemoryObjectReceiveStream[Job],
    reports: MemoryObjectSendStream[Report],
) -> None:
    # The hot loop: take a waiting job without a checkpoint when there is one (``receive()`` and
    # ``send()`` each yield to the event loop), hand the outcome over without waiting (the
    # report stream is unbounded), and yield every CHECKPOINT_EVERY jobs so that a run of
    # no-op jobs that never suspend cannot starve the reader, the finisher and the other duties.
    receive_nowait, send_nowait = jobs.receive_nowait, reports.send_nowait
    checkpoint = anyio.lowlevel.checkpoint
    streak = 0
    async with jobs, reports:
        while True:
            try:
                job = receive_nowait()
            except anyio.WouldBlock:
                try:
                    job = await jobs.receive()
                except anyio.EndOfStream:
                    return
                streak = 0
            except anyio.EndOfStream:
                return
            else:
                streak += 1
                if streak >= CHECKPOINT_EVERY:
                    streak = 0
                    await checkpoint()
            if state.in_use >= state.concurrency:
                # the concurrency was lowered during the run: this job waits (claimed, not
                # taken: an abort still fails it at once) until a running one ends
                await state.wait_for_slot()
            if job.outcome is not None:
                # settled while it waited in the channel (aborted, or taken over): the listener
                # or the lease keeper accounted for it already
                continue
            job.taken = True
            state.in_use += 1
            try:
                await runner.run(job)
            finally:
                if job.outcome is None:
                    runner.hand_back(job)
                # the slot is free before the wake-up that ``decided`` sends
                state.in_use -= 1
                state.decided(job)
            try:
                send_nowait(job)
            except anyio.BrokenResourceError:
                # the finisher is gone, so the run is being cancelled: this outcome is recorded
                # with the leftovers (run_worker), and the pending cancellation raised here
                await checkpoint()
                return


async def _hand_back_leftovers(state: WorkerState, runner: Runner) -> None:
    leftovers = list(state.jobs.values())
    for job in leftovers:
        if job.outcome is None:
            runner.hand_back(job)
    with anyio.CancelScope(shield=True), anyio.move_on_after(LEFTOVER_TIMEOUT):
        await record(state, leftovers)


async def _retire(state: WorkerState) -> None:
    worker = state.worker
    with anyio.CancelScope(shield=True), anyio.move_on_after(LEFTOVER_TIMEOUT):
        try:
            handed = await state.client.functions.retire(worker.id, now_ms(), worker.priorities)
        except Exception as e:
            # whatever it still holds is reclaimed by other workers after idle_timeout
            logger.warning("worker %s could not retire from the queue: %s", worker.id, e)
            return
        if handed:
            logger.info(
                "worker %s handed back %s delivered to it but never received",
                worker.id,
                plural(handed, "task"),
            )


class RunHandle:
    """The worker's view of its run, filled in by :func:`run_worker` and emptied when it ends.

    ``Worker.context`` and ``Worker.running()`` read it, so the run never reaches into the worker
    (nor imports its module) to publish them.
    """

    __slots__ = ("context", "state")

    def __init__(self) -> None:
        #: the lifespan's value, in a 1-tuple (it may be ``None``) while the lifespan is entered
        self.context: tuple[Any] | None = None
        #: the run's state, while the worker runs
        self.state: WorkerState | None = None


async def run_worker(
    worker: Worker[Any],
    handle: RunHandle,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``worker`` until it is asked to stop; see the module docstring.

    :param worker: the worker to run
    :param handle: where the run publishes the lifespan's value and its state
    :param task_status: told once the worker runs
    """
    async with worker:
        client = worker._client
        state = WorkerState(worker, client, worker.concurrency + worker.prefetch)
        state.concurrency = worker.concurrency
        runner = Runner(state)
        handle.state = state
        try:
            async with worker.lifespan() as context:
                handle.context = (context,)
                await _serve(state, runner, task_status)
        except anyio.get_cancelled_exc_class():
            await _hand_back_leftovers(state, runner)
            await _retire(state)
            raise
        finally:
            state.log.flush()
            handle.context = None
            handle.state = None
        await _retire(state)
    done = ", ".join(f"{n} {name}" for name, n in worker.counters.items() if n)
    logger.info("worker %s stopped%s", worker.id, f": {done}" if done else "")


async def _serve(
    state: WorkerState, runner: Runner, task_status: anyio.abc.TaskStatus[None]
) -> None:
    worker = state.worker
    idle = to_seconds(worker.idle_timeout) or 60.0
    # claims are bounded by the capacity count, not by this buffer: the reader and the reclaimer
    # both size their claims from it before waiting on Redis, so a full buffer must never make
    # a claimed message undeliverable (send_nowait would raise WouldBlock and end the run)
    send_jobs, recv_jobs = anyio.create_memory_object_stream[Job](math.inf)
    send_out, recv_out = anyio.create_memory_object_stream[Report](math.inf)
    reader = Reader(state, send_jobs)
    reclaimer = Reclaimer(state, reader.accept, idle)
    # every end of the streams is closed however the run ends: a duty cancelled before it
    # started never enters its own ``async with``, and an unclosed stream warns when collected
    streams: list[MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any]] = [
        send_jobs,
        recv_jobs,
        send_out,
        recv_out,
    ]

    def serve(name: str, duty: Any) -> Any:
        return lambda: keep_serving(state, name, duty)

    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(LeaseKeeper(state, heartbeat_interval(idle)).run)
            await outer.start(listener, state, runner)
            async with anyio.create_task_group() as finishing:
                finishing.start_soon(finisher, state, recv_out)
                async with anyio.create_task_group() as runners:
                    # kept open while the runners run, to start more of them when the
                    # concurrency is raised (set_concurrency); closed below, with the reports
                    spare_jobs, spare_out = recv_jobs.clone(), send_out.clone()
                    streams += [spare_jobs, spare_out]

                    def add_runners(count: int) -> None:
                        for _ in range(count):
                            jobs, outcomes = spare_jobs.clone(), spare_out.clone()
                            streams.extend((jobs, outcomes))
                            state.runners += 1
                            runners.start_soon(_run_jobs, state, runner, jobs, outcomes)

                    with send_out:
                        state.reports = send_out.clone()
                        streams.append(state.reports)
                        add_runners(worker.concurrency)
                    state.add_runners = add_runners
                    recv_jobs.close()
                    async with anyio.create_task_group() as duties:
                        await duties.start(reader.run)
                        duties.start_soon(serve("reclaimer", reclaimer.run))
                        duties.start_soon(serve("scheduler", lambda: scheduler(state)))
                        duties.start_soon(serve("cron", lambda: fire_cron_jobs(state)))
                        if worker.handle_signals:
                            await duties.start(signals, state)
                        logger.info("%s", banner(worker))
                        task_status.started()
                        await state.stop_requested.wait()
                        duties.cancel_scope.cancel()
                    state.stopping = True
                    state.add_runners = None
                    send_jobs.close()
                    grace = None if worker.burst else to_seconds(worker.grace_period) or 0
                    with anyio.move_on_after(grace):
                        while state.running():
                            await state.changed()
                    for job in list(state.jobs.values()):
                        if job.scope is not None:
                            job.scope.cancel()
                # the runners are done: nothing reports a start any more
                reports, state.reports = state.reports, None
                if reports is not None:
                    reports.close()
                spare_jobs.close()
                spare_out.close()
            outer.cancel_scope.cancel()
    finally:
        state.reports = None
        for stream in streams:
            stream.close()
