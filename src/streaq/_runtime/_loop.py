"""The worker's run: one task group owning every duty, and an orderly shutdown.

Duties: the *reader* claims messages into a bounded channel; *runners* (``concurrency`` of them)
execute jobs; the *finisher* records outcomes in batches (one server call for many tasks); the
*lease keeper* refreshes the idle time of claimed messages; the *reclaimer* takes over messages of
dead workers; the *scheduler* moves due delayed tasks into the streams; the *listener* receives
abort requests and wake-ups; the *signal* duty turns SIGINT/SIGTERM into a graceful stop.

Shutdown: the reader stops claiming; messages claimed but not started are handed back at once;
running jobs get ``grace_period`` to finish, then their scopes are cancelled and they are handed
back; the finisher records every outcome before the run returns. When the run itself is cancelled,
whatever is left is handed back under a shield.
"""

from __future__ import annotations

import logging
import math
import signal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._codec import encode_fields
from .._redis import Backoff
from ..types import StreaqCancelled
from ..utils import now_ms, to_seconds
from ._crashpoints import ARMED, crashpoint
from ._cron_fire import fire_cron_jobs
from ._leases import LeaseKeeper
from ._reader import Reader
from ._runner import Runner
from ._state import RECOVERABLE, Job, WorkerState

if TYPE_CHECKING:
    from ..worker import Worker

logger = logging.getLogger("streaq")

FINISH_BATCH = 200
#: a runner yields to the event loop at least once per this many jobs taken without waiting
CHECKPOINT_EVERY = 8


def _finish_args(jobs: list[Job]) -> list[Any]:
    args: list[Any] = []
    for job in jobs:
        assert job.outcome is not None
        kind, a, b, c = job.outcome
        args += [job.task_id, job.priority, job.msgid, kind, a, b, c]
    return args


async def _record(state: WorkerState, jobs: list[Job]) -> None:
    """Record outcomes, retrying on connection trouble: an outcome is never dropped."""
    todo = [j for j in jobs if j.outcome is not None and j.outcome[0] and not j.lost]
    backoff = Backoff()
    while todo:
        try:
            if ARMED:
                crashpoint("before_finish")
            _, released = await state.client.functions.finish(
                state.worker.id, now_ms(), _finish_args(todo)
            )
            if ARMED:
                crashpoint("during_release", released > 0)
                crashpoint("during_retry", any(j.outcome[0] == "y" for j in todo if j.outcome))
                crashpoint("during_finish")
            state.outage.ok()
            break
        except RECOVERABLE as e:
            delay = backoff.next()
            state.outage.failed(e, f"cannot record {len(todo)} results", delay)
            await anyio.sleep(delay)
    for job in jobs:
        state.recorded(job)


async def _finisher(state: WorkerState, outcomes: MemoryObjectReceiveStream[Job]) -> None:
    async with outcomes:
        async for first in outcomes:
            batch = [first]
            while len(batch) < FINISH_BATCH:
                try:
                    batch.append(outcomes.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await _record(state, batch)


async def _run_jobs(
    state: WorkerState,
    runner: Runner,
    jobs: MemoryObjectReceiveStream[Job],
    outcomes: MemoryObjectSendStream[Job],
) -> None:
    # The hot loop: take a waiting job without a checkpoint when there is one (``receive()`` and
    # ``send()`` each yield to the event loop), hand the outcome over without waiting (the
    # outcome stream is unbounded), and yield every CHECKPOINT_EVERY jobs so that a run of
    # no-op jobs that never suspend cannot starve the reader, the finisher and the other duties.
    receive_nowait, send_nowait = jobs.receive_nowait, outcomes.send_nowait
    checkpoint = anyio.lowlevel.checkpoint
    streak = 0
    async with jobs, outcomes:
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
            if job.outcome is not None:
                # aborted while it waited in the channel; the listener recorded it already
                continue
            job.taken = True
            try:
                await runner.run(job)
            finally:
                if job.outcome is None:
                    runner.hand_back(job)
                state.decided(job)
            try:
                send_nowait(job)
            except anyio.BrokenResourceError:
                # the finisher is gone, so the run is being cancelled: this outcome is recorded
                # with the leftovers (run_worker), and the pending cancellation raised here
                await checkpoint()
                return


async def _scheduler(state: WorkerState) -> None:
    functions = state.client.functions
    backoff = Backoff()
    while True:
        try:
            moved, nxt = await functions.promote(now_ms(), 1000)
            if ARMED:
                crashpoint("during_promotion", moved > 0)
            backoff.reset()
            state.outage.ok()
        except RECOVERABLE as e:
            delay = backoff.next()
            state.outage.failed(e, "cannot move delayed tasks", delay)
            await anyio.sleep(delay)
            continue
        if moved >= 1000:
            continue
        delay = 60.0 if nxt < 0 else max(0.0, (nxt - now_ms()) / 1000)
        state.wake = anyio.Event()
        with anyio.move_on_after(min(delay, 60.0)):
            await state.wake.wait()


async def _listener(
    state: WorkerState, runner: Runner, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    keys = state.worker.keys
    async with state.client.redis.pubsub() as ps:
        await ps.subscribe(keys.abort_channel, keys.wake_channel)
        task_status.started()
        async for msg in ps:
            if msg.channel == keys.abort_channel.encode():
                job = state.abort(msg.data.decode())
                if job is not None:
                    # claimed (prefetched) but not started: fail it now, not in its turn
                    runner.fail(job, StreaqCancelled("task aborted"))
                    state.decided(job)
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await _record(state, [job])
            else:
                state.wake.set()


async def _signals(state: WorkerState) -> None:
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        with receiver as signals:
            async for signum in signals:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                state.request_stop()
    except (ValueError, NotImplementedError, RuntimeError):
        # not the main thread: the embedding application handles signals
        return


async def _hand_back_leftovers(state: WorkerState) -> None:
    leftovers = list(state.jobs.values())
    for job in leftovers:
        if job.outcome is None:
            job.outcome = ("h", encode_fields(job.flat_fields()), 0, "")
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        await _record(state, leftovers)


async def run_worker(
    worker: Worker[Any], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run ``worker`` until it is asked to stop; see the module docstring."""
    from ..worker import _UNSET

    async with worker:
        client = worker._client
        state = WorkerState(worker, client, worker.concurrency + worker.prefetch)
        runner = Runner(state)
        worker._runner = state
        try:
            async with worker.lifespan() as context:
                worker._context = context
                await _serve(state, runner, task_status)
        except anyio.get_cancelled_exc_class():
            await _hand_back_leftovers(state)
            raise
        finally:
            worker._context = _UNSET
            worker._runner = None
    logger.info("worker %s stopped: %s", worker.id, worker)


async def _serve(
    state: WorkerState, runner: Runner, task_status: anyio.abc.TaskStatus[None]
) -> None:
    worker = state.worker
    idle = to_seconds(worker.idle_timeout) or 60.0
    # claims are bounded by the capacity count, not by this buffer: the reader and the reclaimer
    # both size their claims from it before waiting on Redis, so a full buffer must never make
    # a claimed message undeliverable (send_nowait would raise WouldBlock and end the run)
    send_jobs, recv_jobs = anyio.create_memory_object_stream[Job](math.inf)
    send_out, recv_out = anyio.create_memory_object_stream[Job](math.inf)
    reader = Reader(state, send_jobs, idle)
    # every end of the streams is closed however the run ends: a duty cancelled before it
    # started never enters its own ``async with``, and an unclosed stream warns when collected
    streams: list[MemoryObjectSendStream[Job] | MemoryObjectReceiveStream[Job]] = [
        send_jobs,
        recv_jobs,
        send_out,
        recv_out,
    ]
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(LeaseKeeper(state, max(idle / 4, 0.05)).run)
            await outer.start(_listener, state, runner)
            async with anyio.create_task_group() as finishing:
                finishing.start_soon(_finisher, state, recv_out)
                async with anyio.create_task_group() as runners:
                    with send_out:
                        for _ in range(worker.concurrency):
                            jobs, outcomes = recv_jobs.clone(), send_out.clone()
                            streams += [jobs, outcomes]
                            runners.start_soon(_run_jobs, state, runner, jobs, outcomes)
                    recv_jobs.close()
                    async with anyio.create_task_group() as duties:
                        await duties.start(reader.run)
                        duties.start_soon(reader.reclaim_loop)
                        duties.start_soon(_scheduler, state)
                        duties.start_soon(fire_cron_jobs, state)
                        if worker.handle_signals:
                            duties.start_soon(_signals, state)
                        logger.info(
                            "worker %s started: queue %s, %d tasks, concurrency %d",
                            worker.id,
                            worker.queue_name,
                            len(worker.registry),
                            worker.concurrency,
                        )
                        task_status.started()
                        await state.stop_requested.wait()
                        duties.cancel_scope.cancel()
                    state.stopping = True
                    send_jobs.close()
                    grace = None if worker.burst else to_seconds(worker.grace_period) or 0
                    with anyio.move_on_after(grace):
                        while state.running():
                            await state.changed()
                    for job in list(state.jobs.values()):
                        if job.scope is not None:
                            job.scope.cancel()
            outer.cancel_scope.cancel()
    finally:
        for stream in streams:
            stream.close()
