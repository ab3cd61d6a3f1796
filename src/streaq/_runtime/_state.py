"""What the duties of a running worker share: claimed jobs, capacity and the stop signal.

A *job* is a stream message this worker claimed. It stays in :attr:`WorkerState.jobs` until its
outcome (result, retry or hand-back) is recorded in Redis, so leases keep being refreshed for it
and a shutdown can hand back whatever is left. Capacity counts jobs claimed whose outcome is not
decided yet: at most ``concurrency + prefetch`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from redis import exceptions as rex

from .._queue import QueueClient
from ._outage import Outage

if TYPE_CHECKING:
    from ..worker import Worker


#: failures a worker duty waits out with a backoff: Redis unreachable, too slow, or (during a
#: Sentinel failover) still a replica
RECOVERABLE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError)


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
    scope: anyio.CancelScope | None = None
    outcome: tuple[str, Any, Any, Any] | None = None

    @property
    def fn_name(self) -> str:
        """The registered name of the task's function."""
        return self.fields.get("f", b"").decode()

    def flat_fields(self) -> list[bytes | str]:
        """The stream entry's fields as the flat list XADD takes."""
        flat: list[bytes | str] = []
        for key, value in self.fields.items():
            flat += [key, value]
        return flat


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
    _changed: anyio.Event = field(default_factory=anyio.Event)
    #: the one warning per Redis outage that every duty reports to
    outage: Outage = field(init=False)

    def __post_init__(self) -> None:
        worker = self.worker
        where = self.client.redis.address
        if worker.sentinel_nodes:
            where = f"the master {worker.sentinel_master!r} of the sentinels"
        self.outage = Outage(where)

    def free(self) -> int:
        """How many more messages may be claimed now."""
        return self.limit - self.active

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

    def decided(self, job: Job) -> None:
        """The job's outcome is known: its slot is free for another message."""
        self.active -= 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def recorded(self, job: Job) -> None:
        """The job's outcome is in Redis: forget it."""
        if self.jobs.get(job.task_id) is job:
            del self.jobs[job.task_id]

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
