"""Leases of claimed messages, renewed from a thread so that a blocked event loop cannot lose them.

A message a worker claimed stays in the stream's pending list until its outcome is recorded;
another worker's reclaimer takes it over once it has been idle longer than ``idle_timeout``
(its worker is presumed dead). Renewing the lease resets that idle time (``XCLAIM … JUSTID`` to
the same consumer, through the ``lease`` server function).

**The mechanism.** Renewal runs in a plain :class:`threading.Thread` (``streaq-leases-<worker>``)
with its *own* event loop and its *own* Redis client (streaq's connection layer, opened with the
worker's URL, Sentinel or Cluster settings, so TLS and ACL users work as for the worker). Every
``idle_timeout / 4`` it snapshots the jobs the worker holds, renews their leases and writes the
worker's heartbeat (``streaq info`` lists live workers from it) with its report (host, pid,
backend, concurrency, running tasks: ``WorkerReport`` of :mod:`streaq._inspect`). A task that
blocks the worker's event loop -- ``time.sleep`` or CPU-bound code in an ``async def`` --
therefore cannot make its own message look abandoned: while the *process* lives, its leases
live, so the task is not run a second time by another worker (streaq 7.2 renewed leases on the
event loop and, after such a block, reclaimed and re-ran its own task). A dead process stops
renewing at once, and its messages are reclaimed after ``idle_timeout`` as before.

**Blocked-loop detection.** A small duty on the event loop (:meth:`LeaseKeeper.run`) beats every
``HEARTBEAT`` seconds (a monotonic timestamp). The thread watches the beat: when it is older than
``BLOCKED_AFTER`` it logs a warning naming how long the loop has been blocked (again each time that
doubles); once the loop runs again, the duty logs how long the block lasted in total.

Messages the thread finds taken over by another worker (this worker lost Redis for longer than
``idle_timeout``) are handed to the loop duty, which marks their jobs lost: a running one is
cancelled, a prefetched one is dropped and its slot freed; the other worker writes their results.
The thread stops with the run: the duty's ``finally`` signals it and joins it (shielded); the run
then retires the worker from the queue (its heartbeat included). It is a daemon thread only as a
last resort, so that an interpreter exiting abnormally is never held up by it. Its reconnect
backoff never exceeds the renewal interval, so that after an outage its leases are renewed before
other workers' reclaimers (which wait ``idle_timeout`` after an outage) could take them over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from .._inspect import REPORTED_RUNNING, WorkerReport
from .._library import QueueFunctions
from .._redis import RECOVERABLE, Backoff, RedisClient
from .._words import plural
from ..utils import now_ms
from ._state import NO_OUTCOME

if TYPE_CHECKING:
    from ._state import WorkerState

logger = logging.getLogger("streaq")

#: how often the event loop beats (seconds)
HEARTBEAT = 0.1
#: a loop whose beat is older than this (seconds) is reported as blocked
BLOCKED_AFTER = 1.0
#: how long stopping waits for the thread (seconds)
JOIN_TIMEOUT = 10.0
#: how long a worker's report outlives its last heartbeat (ms): as long as ``streaq info`` and
#: the UI list a stopped worker (the reclaimer forgets heartbeats older than that)
REPORT_TTL_MS = 3_600_000


def backend_name() -> str:
    """The async backend running the caller (``asyncio``, ``asyncio+uvloop`` or ``trio``)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "trio"  # anyio's only other backend
    return "asyncio+uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class LeaseKeeper:
    """Renews the leases of one worker run from a thread; watches the run's event loop.

    :param state: the run's shared state
    :param interval: seconds between lease renewals
    """

    def __init__(self, state: WorkerState, interval: float) -> None:
        self.state = state
        self.interval = interval
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lost: set[str] = set()
        self._report = WorkerReport(
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=state.worker.concurrency,
            started_ms=now_ms(),
        )
        self._thread = threading.Thread(
            target=self._thread_main, name=f"streaq-leases-{state.worker.id}", daemon=True
        )

    async def run(self) -> None:
        """Start the thread, beat and apply lost leases until cancelled; then stop the thread."""
        self._beat = time.monotonic()
        # known only on the worker's own loop; the thread runs a loop of its own
        self._report = msgspec.structs.replace(self._report, backend=backend_name())
        self._thread.start()
        try:
            while True:
                before = time.monotonic()
                self._beat = before
                await anyio.sleep(HEARTBEAT)
                late = time.monotonic() - before - HEARTBEAT
                if late >= BLOCKED_AFTER:
                    logger.warning(
                        "the event loop of worker %s was blocked for %.1f s (a task running "
                        "blocking code in an async function?); its task leases were kept",
                        self.state.worker.id,
                        late,
                    )
                self._apply_lost()
        finally:
            self._stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join, JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning("the lease thread of worker %s did not stop", self.state.worker.id)

    def _apply_lost(self) -> None:
        with self._lock:
            if not self._lost:
                return
            lost, self._lost = self._lost, set()
        state = self.state
        for job in list(state.jobs.values()):
            if job.msgid in lost and job.outcome is None:
                # another worker took it over; its result is that worker's to write
                logger.warning("task %s was taken over by another worker", job.task_id)
                job.lost = True
                job.outcome = NO_OUTCOME
                if job.scope is not None:
                    job.scope.cancel()
                elif not job.taken:
                    # still in the job channel: no runner will account for it
                    state.decided(job)
                    state.recorded(job)

    # the thread

    def _thread_main(self) -> None:
        try:
            anyio.run(self._serve)
        except Exception:
            logger.exception("the lease thread of worker %s failed", self.state.worker.id)

    async def _serve(self) -> None:
        backoff = Backoff(maximum=max(self.interval, 0.05))
        while not self._stop.is_set():
            try:
                async with self.state.worker._open_redis(max_connections=2) as redis:
                    backoff.reset()
                    await self._renew_until_stopped(redis)
                return
            except Exception as e:
                # never let the thread die while the run goes on: its leases would lapse
                delay = backoff.next()
                if isinstance(e, RECOVERABLE):
                    # one warning per outage for the whole worker, not one per retry
                    self.state.outage.failed(e, "cannot renew task leases", delay)
                else:
                    logger.warning("cannot renew task leases (%s); retrying in %.1fs", e, delay)
                await self._wait(delay)

    async def _renew_until_stopped(self, redis: RedisClient) -> None:
        worker = self.state.worker
        functions = QueueFunctions(redis, worker.keys.prefix)
        reported = BLOCKED_AFTER
        while not self._stop.is_set():
            pairs: list[str] = []
            running: list[str] = []
            # every message still pending for this worker, outcome decided or not: until the
            # finisher records it, it must not look abandoned
            for job in self._snapshot():
                if not job.lost:
                    pairs += [job.priority, job.msgid]
                    if job.started and job.outcome is None:
                        running.append(job.task_id)
            # concurrency read each time: set_concurrency / scale change it while it runs
            report = msgspec.structs.replace(
                self._report,
                concurrency=worker.concurrency,
                running=running[:REPORTED_RUNNING],
                running_count=len(running),
            )
            # the plain heartbeat (what every reader knows), and the report beside it
            await redis.pipeline(
                [
                    ["HSET", worker.keys.workers, worker.id, now_ms()],
                    [
                        "SET",
                        worker.keys.worker_info(worker.id),
                        msgspec.json.encode(report),
                        "PX",
                        REPORT_TTL_MS,
                    ],
                ]
            )
            self.state.outage.ok()
            if pairs:
                logger.debug("renewing the leases of %s", plural(len(pairs) // 2, "message"))
                lost = {bytes(m).decode() for m in await functions.lease(worker.id, pairs)}
                if lost:
                    with self._lock:
                        self._lost |= lost
            due = time.monotonic() + self.interval
            while not self._stop.is_set() and (left := due - time.monotonic()) > 0:
                blocked = time.monotonic() - self._beat
                if blocked >= reported:
                    logger.warning(
                        "the event loop of worker %s has been blocked for %.1f s (a task running "
                        "blocking code in an async function?); its task leases are still renewed",
                        worker.id,
                        blocked,
                    )
                    reported *= 2
                elif blocked < BLOCKED_AFTER:
                    reported = BLOCKED_AFTER
                await anyio.sleep(min(left, HEARTBEAT))

    def _snapshot(self) -> list[Any]:
        # the event loop mutates the dict meanwhile; a copy is taken between its changes
        while True:
            try:
                return list(self.state.jobs.values())
            except RuntimeError:
                continue

    async def _wait(self, seconds: float) -> None:
        due = time.monotonic() + seconds
        # a threading.Event cannot be awaited on this thread's loop: poll it
        while not self._stop.is_set() and (left := due - time.monotonic()) > 0:  # noqa: ASYNC110
            await anyio.sleep(min(left, HEARTBEAT))
