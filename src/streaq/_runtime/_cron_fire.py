"""Firing cron jobs: every worker computes the same occurrences and enqueues them by id.

Each occurrence of a cron job becomes a task whose id is derived from the job's name and the
occurrence's time (``cron_firing_id``). The enqueue skips an id that exists already, so any number
of workers fire an occurrence once, with no leader. An occurrence seen later than
``max_schedule_drift`` after its time is skipped. A job removed from the code is simply no longer
fired: nothing about cron jobs is stored in Redis between occurrences.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from .._clock import wait_until
from .._cron import CronSchedule, cron_firing_id
from .._redis import Backoff, is_transient
from ..task import Task
from ..utils import now_ms, to_ms
from ._state import WorkerState

logger = logging.getLogger("streaq")

# occurrences missed by at most this much are still fired when no drift limit is set
_DEFAULT_CATCH_UP_MS = 60_000


async def fire_cron_jobs(state: WorkerState) -> None:
    """Enqueue each cron job's occurrences as they come due, until cancelled."""
    worker = state.worker
    jobs = {
        name: (task, CronSchedule(task.crontab, worker.tz))
        for name, task in worker.registry.items()
        if task.crontab
    }
    if not jobs:
        return
    start = now_ms()
    due = {name: schedule.next_fire_ms(start - 1) for name, (_, schedule) in jobs.items()}
    backoff = Backoff()
    while True:
        now = now_ms()
        firing: list[Task[Any, Any]] = []
        fired: dict[str, int] = {}
        for name, (task, schedule) in jobs.items():
            fire_ms = due[name]
            if fire_ms > now:
                continue
            drift = to_ms(task.max_schedule_drift)
            limit = drift if drift is not None else _DEFAULT_CATCH_UP_MS
            if now - fire_ms <= limit:
                firing.append(Task((), {}, task, worker, id=cron_firing_id(name, fire_ms)))
                fired[name] = fire_ms
            else:
                logger.warning("cron job %s skipped its %d occurrence (too late)", name, fire_ms)
            due[name] = schedule.next_fire_ms(max(fire_ms, now - limit))
        if firing:
            try:
                await worker.enqueue_many(firing)
                backoff.reset()
                state.outage.ok()
            except Exception as e:
                if not is_transient(e):
                    raise
                # firing ids are deterministic, so firing the same occurrences again is safe:
                # retry them after a pause rather than lose them to the outage (they are still
                # skipped once later than their drift limit)
                due.update(fired)
                delay = backoff.next()
                state.outage.failed(e, "cannot fire cron jobs", delay)
                await anyio.sleep(delay)
                continue
        state.cron_fired(now)
        await wait_until(min(due.values()), anyio.Event())
