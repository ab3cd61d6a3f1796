"""Receiving abort requests, pauses, concurrency commands and wake-ups on the queue's channels.

An abort of a task this worker holds cancels its run; a task claimed but not started yet
(prefetched) fails at once instead of waiting for its turn. Messages published while the
subscription is down are lost, so after every (re)subscription the listener reads the queue's
abort set and applies the requests for tasks it holds, and wakes the scheduler, which may have
missed a wake-up too. Pauses and the last concurrency command (``Worker.scale``) are read again
from their keys for the same reason.
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc

from .._flow import flow_paused
from .._redis import Backoff
from ..types import StreaqCancelled
from ._finisher import record
from ._retry import retrying
from ._runner import Runner
from ._state import WorkerState

logger = logging.getLogger("streaq")


async def listener(
    state: WorkerState, runner: Runner, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Apply abort requests and pauses, and wake the scheduler, until cancelled.

    A failure to subscribe at start fails the run's start; later failures are logged and the
    subscription is opened again after a backoff.
    """
    keys = state.worker.keys
    abort_channel = keys.abort_channel.encode()
    pause_channel = keys.pause_channel.encode()
    scale_channel = keys.scale_channel.encode()
    backoff = Backoff(initial=0.1, maximum=30.0)
    started = False
    while True:
        try:
            async with state.client.redis.pubsub() as ps:
                await ps.subscribe(
                    keys.abort_channel, keys.wake_channel, keys.pause_channel, keys.scale_channel
                )
                await _read_pauses(state)
                await _read_scale(state)
                if not started:
                    started = True
                    task_status.started()
                backoff.reset()
                await _recheck_aborts(state, runner)
                state.wake.set()
                async for msg in ps:
                    if msg.kind == b"reconnected":
                        await _read_pauses(state)
                        await _read_scale(state)
                        await _recheck_aborts(state, runner)
                        state.wake.set()
                    elif msg.channel == pause_channel:
                        await _read_pauses(state)
                    elif msg.channel == scale_channel:
                        _apply_scale(state, bytes(msg.data))
                    elif msg.channel == abort_channel:
                        await _abort(state, runner, msg.data.decode())
                    else:
                        state.wake.set()
        except Exception as e:
            if not started:
                raise
            delay = backoff.next()
            logger.error(
                "the abort listener of worker %s failed; restarting it in %.1fs",
                state.worker.id,
                delay,
                exc_info=e,
            )
            await anyio.sleep(delay)


async def _read_pauses(state: WorkerState) -> None:
    flows = await retrying(
        state,
        "cannot read which tasks are paused",
        lambda: state.client.redis.execute("HGETALL", state.worker.keys.limits),
    )
    items = flows.items() if isinstance(flows, dict) else zip(flows[::2], flows[1::2], strict=True)
    state.set_paused(frozenset(bytes(fn).decode() for fn, cfg in items if flow_paused(bytes(cfg))))


async def _read_scale(state: WorkerState) -> None:
    command = await retrying(
        state,
        "cannot read the queue's concurrency command",
        lambda: state.client.redis.execute("GET", state.worker.keys.scale),
    )
    _apply_scale(state, None if command is None else bytes(command))


def _apply_scale(state: WorkerState, command: bytes | None) -> None:
    """Apply a fleet-wide concurrency command (``<n>:<nonce>``) the first time it is seen; the
    one found when the run starts is older than the run and only remembered."""
    first = state.scale_seen is None
    if command is None or command == state.scale_seen:
        state.scale_seen = state.scale_seen or b""
        return
    state.scale_seen = command
    if first:
        return
    try:
        concurrency = int(command.split(b":", 1)[0])
    except ValueError:
        logger.warning("ignoring a malformed concurrency command %r", command)
        return
    if concurrency >= 1:
        state.worker.set_concurrency(concurrency)


async def _recheck_aborts(state: WorkerState, runner: Runner) -> None:
    if not state.jobs:
        return
    members = await retrying(
        state,
        "cannot read abort requests",
        lambda: state.client.redis.execute("SMEMBERS", state.worker.keys.abort_set),
    )
    for member in members:
        task_id = bytes(member).decode()
        if task_id in state.jobs:
            await _abort(state, runner, task_id)


async def _abort(state: WorkerState, runner: Runner, task_id: str) -> None:
    job = state.abort(task_id)
    if job is None:
        return
    # claimed (prefetched) but not started: it fails now, not in its turn
    runner.fail(job, StreaqCancelled("task aborted"))
    state.decided(job)
    if state.reports is not None:
        state.reports.send_nowait(job)
    else:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await record(state, [job])
