"""Claiming new messages: blocking reads of the streams.

The reader never claims more than the free capacity (``concurrency + prefetch`` minus jobs whose
outcome is undecided), so the job channel never blocks it. With several priorities it reads the
streams highest first without blocking and only blocks (``COUNT 1`` per stream) when all are
empty. In burst mode it stops the worker once nothing is queued, due or running.

A read interrupted after the server delivered (the connection lost mid-reply, a cancellation) leaves
messages in this worker's pending list that it never saw: the reclaimer finds them once they are
idle (:mod:`._reclaimer`), and a stopping worker hands them back (``retire``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from redis import exceptions as rex

from .._keys import GROUP
from .._redis import Backoff, Connection, is_transient
from .._schema import F_ID, F_TRIES
from .._words import plural
from ..utils import now_ms
from ._crashpoints import ARMED, crashpoint
from ._state import Job, WorkerState, parse_fields

logger = logging.getLogger("streaq")

BLOCK_MS = 2000
# a blocking read may take BLOCK_MS on purpose: its round trip is allowed that on top of
# socket_timeout, which still bounds the wait on a server that vanished
BLOCK_SECONDS = BLOCK_MS / 1000


def _entries(reply: Any) -> list[tuple[str, list[Any]]]:
    """(stream name, entries) pairs from an XREADGROUP reply in RESP2 or RESP3 shape."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(bytes(name).decode(), entries) for name, entries in items]


class Reader:
    """Claims messages for one worker run.

    :param state: the run's shared state
    :param jobs: where claimed jobs go
    """

    def __init__(self, state: WorkerState, jobs: MemoryObjectSendStream[Job]) -> None:
        self.state = state
        self.jobs = jobs
        worker = state.worker
        self.streams = [worker.keys.stream(p) for p in reversed(worker.priorities)]
        self.priority_of = {worker.keys.stream(p): p for p in worker.priorities}

    def accept(self, job: Job) -> None:
        """Hand a claimed job to the runners."""
        self.state.add(job)
        self.jobs.send_nowait(job)

    async def _read(self, conn: Connection, count: int, block: bool) -> int:
        worker = self.state.worker
        head = ["XREADGROUP", "GROUP", GROUP, worker.id, "COUNT"]
        claimed = 0
        if len(self.streams) > 1:
            for stream in self.streams:
                if claimed >= count:
                    break
                reply = await conn.execute(*head, count - claimed, "STREAMS", stream, ">")
                claimed += self._claim(reply)
            if claimed or not block:
                return claimed
            reply = await conn.execute(
                *head,
                1,
                "BLOCK",
                BLOCK_MS,
                "STREAMS",
                *self.streams,
                *[">"] * len(self.streams),
                block=BLOCK_SECONDS,
            )
            return self._claim(reply)
        args: list[Any] = [*head, count]
        if block:
            args += ["BLOCK", BLOCK_MS]
        reply = await conn.execute(
            *args, "STREAMS", self.streams[0], ">", block=BLOCK_SECONDS if block else 0.0
        )
        return self._claim(reply)

    def _claim(self, reply: Any) -> int:
        claimed = 0
        for stream, entries in _entries(reply):
            priority = self.priority_of[stream]
            for msgid, flat in entries:
                if flat is None:
                    continue
                fields = parse_fields(flat)
                tries = int(fields.get(F_TRIES, b"0")) + 1
                self.accept(
                    Job(fields[F_ID].decode(), bytes(msgid).decode(), priority, fields, tries)
                )
                claimed += 1
        if claimed:
            logger.debug("worker %s claimed %s", self.state.worker.id, plural(claimed, "message"))
        if ARMED:
            crashpoint("after_claim", claimed > 0)
        return claimed

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Claim new messages until cancelled (or, in burst mode, until the queue is empty)."""
        state = self.state
        burst = state.worker.burst
        backoff = Backoff()
        started = False
        while True:
            try:
                async with state.client.redis.dedicated(home_key=state.client.keys.prefix) as conn:
                    if not started:
                        started = True
                        task_status.started()
                    while True:
                        await state.wait_for_capacity()
                        while state.is_paused(""):
                            # the queue is paused: nothing is claimed until it is resumed
                            await state.pauses_changed.wait()
                        claimed = await self._read(conn, state.free(), block=not burst)
                        backoff.reset()
                        state.outage.ok()
                        if burst and not claimed and await self._burst_done():
                            state.request_stop()
                            return
            except Exception as e:
                if isinstance(e, rex.ResponseError) and "NOGROUP" in str(e):
                    state.outage.ok()  # a reply: Redis is back (it lost the queue, if it restarted)
                    await self._recreate_group(backoff)
                    continue
                delay = backoff.next()
                if is_transient(e):
                    # one warning per outage (state.outage), not one per retry of every duty;
                    # a demoted master unblocks the read (UNBLOCKED) and refuses the next
                    # (READONLY): wait, as for an outage, until the name points at a master
                    state.outage.failed(e, "cannot read tasks", delay)
                else:
                    logger.error("cannot read tasks; retrying in %.1fs", delay, exc_info=e)
                await anyio.sleep(delay)

    async def _recreate_group(self, backoff: Backoff) -> None:
        """The streams or their group vanished (a Redis restart without persistence)."""
        logger.warning("the queue's consumer group is gone (Redis restarted?); recreating it")
        try:
            await self.state.client.prepare()
        except Exception as e:
            delay = backoff.next()
            if is_transient(e):
                self.state.outage.failed(e, "cannot recreate the consumer group", delay)
            else:
                logger.error("cannot recreate the consumer group: %s", e)
            await anyio.sleep(delay)

    async def _burst_done(self) -> bool:
        state = self.state
        if state.active:
            await state.changed()
            return False
        moved, _ = await state.client.functions.promote(now_ms(), 1000)
        return moved == 0
