"""Taking over the messages of workers that stopped renewing their leases.

Every ``idle_timeout / 2`` the reclaimer calls the ``reclaim`` server function for as many messages
as there are free slots. It takes over messages of *other* consumers idle longer than
``idle_timeout`` (their worker died, or lost Redis for longer than that), scanning each stream's
pending list from where its previous call stopped (a cursor per priority), so that idle messages
behind many live ones are reached too. Its own worker's messages are never taken over: those the
worker holds keep their lease (the server resets their idle time); one the worker never received
-- a read whose reply was lost -- becomes a job like any claimed message.

After an outage of its own the reclaimer waits ``idle_timeout`` before taking over anything: when
Redis was down for everyone, every live worker's leases lapsed at once, and a worker that is back
first must give the others the time to renew theirs rather than run their tasks a second time.

Once a minute it also prunes what stopped workers leave behind (the ``prune`` server function):
consumers without pending messages whose worker is gone, and heartbeats older than an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from redis import exceptions as rex

from .._schema import F_ID, F_TRIES
from .._words import plural
from ..utils import now_ms
from ._crashpoints import ARMED, crashpoint
from ._retry import retrying
from ._state import Job, WorkerState, parse_fields

logger = logging.getLogger("streaq")

#: seconds between two prunings
PRUNE_EVERY = 60.0
#: heartbeats older than this are forgotten (ms); ``streaq info`` lists younger ones as dead
FORGET_AFTER_MS = 3_600_000


class Reclaimer:
    """Takes over idle messages for one worker run.

    :param state: the run's shared state
    :param accept: hands a taken-over job to the runners
    :param idle_timeout: seconds after which a message counts as abandoned
    """

    def __init__(
        self, state: WorkerState, accept: Callable[[Job], None], idle_timeout: float
    ) -> None:
        self.state = state
        self.accept = accept
        self.idle_timeout = idle_timeout
        self.idle_ms = int(idle_timeout * 1000)
        # highest priority first, each scan starting at the beginning of its pending list
        self.cursors = {p: "-" for p in reversed(state.worker.priorities)}
        self._pruned = 0.0

    async def run(self) -> None:
        """Reclaim and prune until cancelled."""
        while True:
            if self.state.free() > 0 and self.state.outage.calm_for() >= self.idle_timeout:
                await self.reclaim()
            if time.monotonic() - self._pruned >= PRUNE_EVERY:
                await self.prune()
            await anyio.sleep(max(self.idle_timeout / 2, 0.05))

    async def reclaim(self) -> int:
        """One round: take over what is idle, as many as there are free slots.

        :return: the number of jobs accepted
        """
        state = self.state
        worker = state.worker
        functions = state.client.functions
        try:
            taken, own, cursors = await retrying(
                state,
                "cannot reclaim tasks",
                lambda: functions.reclaim(
                    worker.id, self.idle_ms, state.free(), list(self.cursors.items())
                ),
            )
        except rex.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            return 0  # the queue is gone (Redis restarted): the reader recreates it
        self.cursors = dict(zip(self.cursors, cursors, strict=True))
        accepted = 0
        for entry in taken:
            job = _job(entry)
            logger.info(
                "task %s reclaimed from a worker that stopped renewing its lease (try %d)",
                job.task_id,
                job.tries,
            )
            self.accept(job)
            accepted += 1
        for entry in own:
            job = _job(entry)
            if state.holds(job.task_id, job.msgid):
                # held, and its lease renewed just now: the lease thread fell behind
                logger.warning("the lease of task %s had lapsed; it was renewed", job.task_id)
                continue
            logger.info("task %s was delivered to this worker but never received", job.task_id)
            self.accept(job)
            accepted += 1
        if ARMED:
            crashpoint("after_claim", accepted > 0)
        return accepted

    async def prune(self) -> None:
        """Delete the consumers of workers that are gone; forget old heartbeats."""
        self._pruned = time.monotonic()
        state = self.state
        dead_after = max(2 * self.idle_ms, 10_000)
        deleted, forgotten = await retrying(
            state,
            "cannot prune stopped workers",
            lambda: state.client.functions.prune(
                now_ms(), dead_after, FORGET_AFTER_MS, state.worker.priorities
            ),
        )
        if deleted or forgotten:
            logger.debug(
                "pruned %s and %s of stopped workers",
                plural(deleted, "consumer"),
                plural(forgotten, "heartbeat"),
            )


def _job(entry: list[Any]) -> Job:
    priority, msgid, flat, deliveries, aborted = entry
    fields = parse_fields(flat)
    tries = int(fields.get(F_TRIES, b"0")) + int(deliveries)
    return Job(
        fields[F_ID].decode(),
        bytes(msgid).decode(),
        bytes(priority).decode(),
        fields,
        tries,
        aborted=bool(aborted),
    )
