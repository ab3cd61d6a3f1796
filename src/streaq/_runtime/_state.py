"""What the duties of a running worker share: claimed jobs, capacity and the stop signal.

A *job* is a stream message this worker claimed. It stays in :attr:`WorkerState.jobs` until its
outcome (result, retry or hand-back) is recorded in Redis, so leases keep being refreshed for it
-- running or still prefetched -- and a shutdown can hand back whatever is left. Capacity counts
jobs claimed whose outcome is not decided yet: at most ``concurrency + prefetch`` of them; at most
``concurrency`` of them run. Both bounds may change during the run
(:meth:`WorkerState.set_concurrency`). Every job is *decided* exactly once
(:meth:`WorkerState.decided` is idempotent), whichever duty settles it: a runner, the listener
(an abort of a prefetched job) or the lease keeper (a job another worker took over); a slot can
therefore neither leak nor be freed twice.

The runners report to the finisher: a job whose function is called joins :attr:`WorkerState.starts`
(the finisher marks it started in Redis, which is what makes its status *running*), and the job
itself is sent on the report channel once its outcome is decided. The finisher takes the pending
starts whenever it records a batch, before the batch's outcomes, so a start is never recorded
after its task's outcome. Only the first start after a batch sends a wake-up (``None``) on the
channel, for a task that runs long: a burst of short tasks adds nothing to the channel.

The state also counts the run's progress -- outcomes recorded, passes of the cron duty -- with a
wake-up for whoever waits on it (:meth:`WorkerState.progress_after`): ``streaq.testing`` drains a
queue on these signals rather than on a timer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from .._codec import ResultRecord, encode
from .._queue import QueueClient
from .._schema import DEFAULT_TTL_MS, F_CREATED, F_FN, F_TTL
from ..utils import now_ms
from ._outage import Outage
from ._tasklog import TaskLog

if TYPE_CHECKING:
    from ..worker import Worker


@dataclass(slots=True, eq=False)
class Job:
    """A claimed message and what became of it."""

    task_id: str
    msgid: str
    priority: str
    fields: dict[str, bytes]
    tries: int
    aborted: bool = False
    started: bool = False
    taken: bool = False
    lost: bool = False
    decided: bool = False
    #: when its function was called (ms; 0 until then), and whether that start was sent to
    #: Redis (by the finisher, or with a progress report of the task)
    start_ms: int = 0
    start_sent: bool = False
    scope: anyio.CancelScope | None = None
    outcome: tuple[str, Any, Any, Any] | None = None
    #: the registered name of the task's function (read once: every step of a run asks for it)
    fn_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.fn_name = self.fields.get(F_FN, b"").decode()

    @property
    def ttl_ms(self) -> int:
        """How long the task's result is kept: -1 forever, 0 only published."""
        return int(self.fields.get(F_TTL, DEFAULT_TTL_MS))

    def record(self, kind: int, payload: bytes, start: int, worker_id: str) -> bytes:
        """The encoded result record of this job, finishing now.

        :param kind: ``KIND_VALUE``, ``KIND_TUPLE`` or ``KIND_ERROR``
        :param payload: the encoded value or exception record
        :param start: when the function was called (ms; 0 when it never was)
        :param worker_id: the worker writing it
        """
        created = int(self.fields.get(F_CREATED, b"0"))
        enqueued = int(self.msgid.split("-", 1)[0])
        return encode(
            ResultRecord(
                self.fn_name,
                created,
                enqueued,
                kind,
                start,
                now_ms(),
                self.tries,
                worker_id,
                msgspec.Raw(payload),
            )
        )

    def flat_fields(self) -> list[bytes | str]:
        """The stream entry's fields as the flat list XADD takes."""
        flat: list[bytes | str] = []
        for key, value in self.fields.items():
            flat += [key, value]
        return flat


#: what the runners send the finisher: a job whose outcome is decided, or ``None`` to wake it for
#: the pending starts
Report = Job | None

#: the outcome of a job whose result is not this worker's to write (recorded elsewhere, or lost)
NO_OUTCOME: tuple[str, Any, Any, Any] = ("", None, None, None)


def parse_fields(flat: list[Any]) -> dict[str, bytes]:
    """Stream entry fields (flat list) as a dict with text keys."""
    return {bytes(flat[n]).decode(): flat[n + 1] for n in range(0, len(flat), 2)}


@dataclass(eq=False)
class WorkerState:
    """Shared state of one worker run."""

    worker: Worker[Any]
    client: QueueClient
    limit: int
    jobs: dict[str, Job] = field(default_factory=dict)
    active: int = 0
    stopping: bool = False
    stop_requested: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    #: where :meth:`start` wakes the finisher (set while the runners run)
    reports: MemoryObjectSendStream[Report] | None = None
    #: jobs whose function was called since the finisher last recorded starts
    starts: list[Job] = field(default_factory=list)
    #: the paused functions (``*``: the whole queue), as the listener last read them
    paused: frozenset[str] = frozenset()
    #: set (and replaced) whenever the paused functions change
    pauses_changed: anyio.Event = field(default_factory=anyio.Event)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    #: the one warning per Redis outage that every duty reports to
    outage: Outage = field(init=False)
    #: the task lines waiting for the finisher's next batch
    log: TaskLog = field(init=False)
    #: how many jobs may run at once (``Worker.set_concurrency`` changes it during the run)
    concurrency: int = 1
    #: jobs the runners are executing now (never more than ``concurrency`` start)
    in_use: int = 0
    #: runner tasks started; ``add_runners`` (set while the runners run) starts more
    runners: int = 0
    add_runners: Callable[[int], None] | None = None
    #: the limiter of sync tasks' threads, resized with ``concurrency`` when derived from it
    sync_limiter: anyio.CapacityLimiter | None = None
    #: the last fleet-wide concurrency command seen (``Worker.scale``), applied when it changes
    scale_seen: bytes | None = None
    #: outcomes recorded and cron passes made so far (see :meth:`progress_after`)
    progress: int = 0
    _progressed: anyio.Event | None = None
    #: every cron occurrence due at this time (ms on the worker's clock) or earlier is fired
    cron_upto: int = -1

    def __post_init__(self) -> None:
        worker = self.worker
        where = self.client.redis.address
        if worker.sentinel_nodes:
            where = f"the master {worker.sentinel_master!r} of the sentinels"
        self.outage = Outage(where)
        self.log = TaskLog(logging.getLogger("streaq"), worker.id)

    def free(self) -> int:
        """How many more messages may be claimed now."""
        return self.limit - self.active

    def set_concurrency(self, concurrency: int, prefetch: int, sync_concurrency: int) -> None:
        """Resize the run: at most ``concurrency`` jobs run and ``concurrency + prefetch`` are
        claimed. Lowered, running jobs finish and no runner starts another until fewer than
        ``concurrency`` run; raised, more runners start and the reader claims more at once."""
        self.concurrency = concurrency
        self.limit = concurrency + prefetch
        if self.sync_limiter is not None:
            self.sync_limiter.total_tokens = sync_concurrency
        if concurrency > self.runners and self.add_runners is not None:
            self.add_runners(concurrency - self.runners)
        # the reader waits for capacity and idle runners for a slot: both look again
        self._notify()

    async def wait_for_slot(self) -> None:
        """Return once a runner may start a job (or the run is stopping: it hands jobs back)."""
        while self.in_use >= self.concurrency and not self.stopping:
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def changed(self) -> None:
        """Return once some job's outcome is decided."""
        await self._changed.wait()

    async def wait_for_capacity(self) -> None:
        """Return once a slot is free."""
        while self.free() <= 0:
            await self._changed.wait()

    def add(self, job: Job) -> None:
        """Account for a newly claimed job."""
        self.jobs[job.task_id] = job
        self.active += 1

    def holds(self, task_id: str, msgid: str) -> bool:
        """Whether this run holds the message ``msgid`` (of the task ``task_id``)."""
        job = self.jobs.get(task_id)
        return job is not None and job.msgid == msgid

    def start(self, job: Job) -> None:
        """The job's function is about to be called: report it to the finisher."""
        job.started = True
        job.start_ms = now_ms()
        if not self.starts and self.reports is not None:
            self.reports.send_nowait(None)
        self.starts.append(job)

    def decided(self, job: Job) -> None:
        """The job's outcome is known: its slot is free for another message (once per job)."""
        if job.decided:
            return
        job.decided = True
        self.active -= 1
        self._notify()

    def recorded(self, job: Job) -> None:
        """The job's outcome is in Redis (or is not this worker's to write): forget it."""
        if self.jobs.get(job.task_id) is job:
            del self.jobs[job.task_id]
        self._progress()

    def cron_fired(self, upto: int) -> None:
        """Every cron occurrence due at ``upto`` (ms) or earlier is enqueued (or skipped)."""
        self.cron_upto = upto
        self._progress()

    def _progress(self) -> None:
        self.progress += 1
        # an event only while someone waits: recording outcomes stays free of allocations
        progressed, self._progressed = self._progressed, None
        if progressed is not None:
            progressed.set()

    async def progress_after(self, seen: int) -> None:
        """Return once :attr:`progress` differs from ``seen``: some outcome was recorded or the
        cron duty made a pass since the caller read it. ``streaq.testing`` drains with it."""
        while self.progress == seen:
            if self._progressed is None:
                self._progressed = anyio.Event()
            await self._progressed.wait()

    def is_paused(self, fn_name: str) -> bool:
        """Whether tasks of ``fn_name`` must not start now (it, or the queue, is paused)."""
        paused = self.paused
        return bool(paused) and ("*" in paused or fn_name in paused)

    def set_paused(self, paused: frozenset[str]) -> None:
        """The paused functions changed (or were read again)."""
        self.paused = paused
        changed, self.pauses_changed = self.pauses_changed, anyio.Event()
        changed.set()

    def request_stop(self) -> None:
        """Begin a graceful shutdown."""
        self.stop_requested.set()

    def abort(self, task_id: str) -> Job | None:
        """Cancel a job of this worker that an abort request names.

        :return: the job when no runner has taken it yet (claimed, not started): its caller
            fails it at once instead of leaving the abort waiting for the job's turn
        """
        job = self.jobs.get(task_id)
        if job is None or job.outcome is not None:
            return None
        job.aborted = True
        if job.scope is not None:
            job.scope.cancel()
        elif not job.taken:
            return job
        return None

    def running(self) -> int:
        """Jobs executing now."""
        return sum(1 for job in self.jobs.values() if job.started and job.outcome is None)
