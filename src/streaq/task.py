"""Task handles: registered task definitions, enqueued tasks, their info and results.

Everything here is client side: building, serializing and sending tasks, and querying them. The
worker that runs tasks lives in :mod:`streaq.worker`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic

from ._codec import CallSpec
from ._flow import FlowLimits
from ._generated_chains import ChainMixin
from ._schema import LINK_THEN
from .types import (
    AsyncTask,
    Dedup,
    DedupOutcome,
    P,
    R,
    StreaqError,
    SyncTask,
    TaskContext,
)

if TYPE_CHECKING:
    from .worker import Worker

__all__ = [
    "AsyncRegisteredTask",
    "EventKind",
    "RegisteredMiddleware",
    "RegisteredTask",
    "SyncRegisteredTask",
    "Task",
    "TaskEvent",
    "TaskInfo",
    "TaskResult",
    "TaskStatus",
]

_current_context: ContextVar[TaskContext] = ContextVar("streaq_task_context")


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    #: task doesn't exist in Redis
    NOT_FOUND = "missing"
    #: task is in the live queue
    QUEUED = "queued"
    #: task is running on a worker
    RUNNING = "running"
    #: task is in the delayed queue (or waits for its dependencies)
    SCHEDULED = "scheduled"
    #: task was completed
    DONE = "done"


@dataclass
class TaskInfo:
    """Information about an unfinished task (running or enqueued)."""

    task_id: str
    fn_name: str
    created_time: int
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    tries: int = 0
    scheduled: datetime | None = None
    dependencies: set[str] = field(default_factory=set)
    dependents: set[str] = field(default_factory=set)
    status: TaskStatus = TaskStatus.NOT_FOUND
    #: the crontab of a task repeating on a schedule (``start(schedule="...")``), else ``None``
    crontab: str | None = None
    #: the latest progress the task reported (``ctx.progress(value)``), else ``None``
    progress: Any = None


class EventKind(StrEnum):
    """What happened to a task, as the queue's event stream tells (see :doc:`/events`)."""

    #: enqueued: queued, delayed, or waiting for its dependencies (also when retried by hand
    #: or replayed from the dead letters)
    ENQUEUED = "enqueued"
    #: a worker called its function
    STARTED = "started"
    #: the task reported progress (:attr:`TaskEvent.progress` holds the value)
    PROGRESS = "progress"
    #: it goes back to wait for another try (``StreaqRetry``, a retried timeout, a rate limit)
    RETRIED = "retried"
    #: it succeeded (final)
    FINISHED = "finished"
    #: it failed: an error, a timeout, a failed dependency (final)
    FAILED = "failed"
    #: it was aborted, purged, unscheduled or superseded (final)
    ABORTED = "aborted"
    #: it was moved to the dead letters (final)
    DEAD_LETTERED = "dead_lettered"

    @property
    def final(self) -> bool:
        """Whether the task has a result after this event (for a repeating task: this run)."""
        return self in _FINAL


_FINAL = frozenset(
    (EventKind.FINISHED, EventKind.FAILED, EventKind.ABORTED, EventKind.DEAD_LETTERED)
)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One entry of the queue's event stream: a transition of a task.

    Every event is written by the server call that makes its transition, so it is never lost or
    written twice, and the events of one task come in the order they happened.
    """

    #: the stream entry's id: ``worker.events(since=event.id)`` resumes after this event
    id: str
    kind: EventKind
    task_id: str
    fn_name: str
    #: when it happened (ms since the epoch)
    time: int
    #: the task's tries so far (a started event counts its own try; enqueued: 0)
    tries: int
    #: the value a progress event reports, else ``None``
    progress: Any = None

    @property
    def final(self) -> bool:
        """Whether the task has a result after this event."""
        return self.kind.final


@dataclass
class TaskResult(Generic[R]):
    """The outcome of a task with its timings (ms since the epoch) and the worker that ran it."""

    task_id: str
    fn_name: str
    created_time: int
    enqueue_time: int
    success: bool
    start_time: int
    finish_time: int
    tries: int
    worker_id: str
    _result: R | BaseException

    @property
    def result(self) -> R:
        """The task's return value.

        :raises StreaqError: when the task failed (see :attr:`exception`)
        """
        if not self.success:
            cause = self._result if isinstance(self._result, BaseException) else None
            raise StreaqError(f"task {self.task_id} failed, see `exception` instead") from cause
        return self._result  # type: ignore[return-value]

    @property
    def exception(self) -> BaseException:
        """The exception the task failed with.

        :raises StreaqError: when the task succeeded (see :attr:`result`)
        """
        if self.success:
            raise StreaqError(f"task {self.task_id} succeeded, see `result` instead")
        return self._result  # type: ignore[return-value]


class RegisteredTask:
    """A task definition registered on a worker, with the options of its decorator."""

    def __init__(
        self,
        *,
        expire: timedelta | int | None,
        max_schedule_drift: timedelta | int | None,
        max_tries: int | None,
        silent: bool,
        timeout: timedelta | int | None,
        ttl: timedelta | int | None,
        unique: bool,
        fn_name: str,
        crontab: str | None,
        worker: Worker[Any],
        retry_timeouts: bool = False,
        flow: FlowLimits | None = None,
    ) -> None:
        self.expire = expire
        self.max_schedule_drift = max_schedule_drift
        self.max_tries = max_tries
        self.silent = silent
        self.timeout = timeout
        self.ttl = ttl
        self.unique = unique
        self.fn_name = fn_name
        self.crontab = crontab
        self.worker = worker
        self.retry_timeouts = retry_timeouts
        #: the flow limits of the task (``concurrency_limit``, ``rate_limit``, group limits)
        self.flow = flow

    def build_context(
        self,
        id: str,
        tries: int = 1,
        trace_context: dict[str, str] | None = None,
        report: Callable[[Any], Awaitable[None]] | None = None,
    ) -> TaskContext:
        """Creates the context for a task to be run given task metadata.

        :param report: what ``context.progress(value)`` calls (set by the worker running it)
        """
        return TaskContext(
            fn_name=self.fn_name,
            task_id=id,
            timeout=self.timeout,
            tries=tries,
            ttl=self.ttl,
            trace_context=trace_context,
            _report=report,
        )

    @property
    def context(self) -> TaskContext:
        """The running task's context; only available inside a running task.

        :raises StreaqError: outside a running task
        """
        try:
            return _current_context.get()
        except LookupError:
            raise StreaqError("task context is only available inside a running task") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fn_name}>"


class AsyncRegisteredTask(RegisteredTask, Generic[P, R]):
    """A registered async task; ``enqueue`` builds a :class:`Task` to await."""

    def __init__(self, *, fn: AsyncTask[P, R], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fn = fn
        self.spec = CallSpec(fn, self.fn_name)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Task[P, R]:
        """Serialize the task and send it to the queue for later execution by an active worker.

        Though this isn't async, it should be awaited, as it returns an object that should be.
        """
        return Task(args, kwargs, self, self.worker)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the function locally, without the queue."""
        return self.fn(*args, **kwargs)


class SyncRegisteredTask(RegisteredTask, Generic[P, R]):
    """A registered sync task (run in a worker thread); ``enqueue`` builds a :class:`Task`."""

    def __init__(self, *, fn: SyncTask[P, R], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fn = fn
        self.spec = CallSpec(fn, self.fn_name)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Task[P, R]:
        """Serialize the task and send it to the queue for later execution by an active worker.

        Though this isn't async, it should be awaited, as it returns an object that should be.
        """
        return Task(args, kwargs, self, self.worker)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function locally, without the queue."""
        return self.fn(*args, **kwargs)


AnyRegisteredTask = AsyncRegisteredTask[Any, Any] | SyncRegisteredTask[Any, Any]


class RegisteredMiddleware:
    """A registered middleware; ``context`` gives the running task's context."""

    def __init__(
        self,
        _wrapped: Callable[
            [Callable[..., Coroutine[Any, Any, Any]]], Callable[..., Coroutine[Any, Any, Any]]
        ],
    ) -> None:
        self._wrapped = _wrapped

    def __call__(
        self, call: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        """Wrap ``call`` (the next middleware, or the task itself)."""
        return self._wrapped(call)

    @property
    def context(self) -> TaskContext:
        """The running task's context; only available inside a running middleware."""
        try:
            return _current_context.get()
        except LookupError:
            raise StreaqError("task context is only available inside a running task") from None


class GeneratedId(str):
    """A task id streaq made (a random UUID): no other task can hold it, so enqueuing it needs
    no check that the id is free. An id a user sets is a plain ``str``."""

    __slots__ = ()


def _new_id() -> str:
    return GeneratedId(uuid.uuid4().hex)


@dataclass(eq=False)
class Task(ChainMixin[P, R], Generic[P, R]):
    """A task to enqueue, or enqueued already. Awaiting the object enqueues it (once).

    Tasks are hashable and compare by id: two handles of one task are equal, so tasks can be
    set members, dict keys, or passed to ``asyncio.gather``.

    With ``dedup_key`` and ``dedup`` (set here or by :meth:`start`), the task meets the live task
    of its key as :class:`~streaq.types.Dedup` says; once enqueued, :attr:`dedup_outcome` tells
    what happened, and a throttled (dropped) task's handle takes the id of the task that holds the
    key, so that ``result()`` waits for that one. See :doc:`/flow-control`.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    parent: RegisteredTask
    worker: Worker[Any]
    id: str = field(default_factory=_new_id)
    _after: Task[Any, Any] | None = None
    after: list[str] = field(default_factory=list)
    delay: timedelta | int | None = None
    schedule: datetime | str | None = None
    priority: str | None = None
    _triggers: Task[Any, Any] | None = None
    _fails_over: bool = False
    #: how a link takes its parent's outcome (``_schema.LINK_*``; a group's collector differs)
    _link_kind: str = LINK_THEN
    #: the members of a group, when this task is one (see :class:`~streaq.Group`)
    _group: tuple[Task[Any, Any], ...] | None = None
    _prev_source: str | None = None
    #: the dedup key (scoped to the task's function and the mode), or ``None``
    dedup_key: str | None = None
    #: the dedup mode and window; a ``timedelta`` (or seconds) is a throttle window
    dedup: Dedup | timedelta | None = None
    #: after the enqueue of a task with a dedup key: what became of it
    dedup_outcome: DedupOutcome | None = field(default=None, init=False)
    #: after the enqueue of a task with a dedup key: the task it was dropped for, superseded, or
    #: follows (``None`` when it was enqueued as any task)
    dedup_other: str | None = field(default=None, init=False)
    _enqueued: bool = field(default=False, repr=False)

    def __eq__(self, other: object) -> bool:
        """Handles of the same task (same id) are equal."""
        if not isinstance(other, Task):
            return NotImplemented
        return self.id == other.id

    def __hash__(self) -> int:
        """The hash of the task id, consistent with equality."""
        return hash(self.id)

    def start(
        self,
        after: str | Iterable[str] | None = None,
        delay: timedelta | int | None = None,
        schedule: datetime | str | None = None,
        priority: str | None = None,
        *,
        dedup_key: str | None = None,
        dedup: Dedup | timedelta | None = None,
    ) -> Task[P, R]:
        """Configure the task to modify schedule, queue, or dependencies.

        :param after: task ID(s) to wait for before running this task
        :param delay: duration to wait before running the task
        :param schedule: datetime at which to run the task, or a crontab to run it repeatedly
        :param priority: priority queue to insert the task
        :param dedup_key: the task's dedup key (given with ``dedup``)
        :param dedup: how the task meets the live task of its key: a
            :class:`~streaq.types.Dedup`, or a ``timedelta`` for ``Dedup.throttle(window)``
        :return: self
        :raises StreaqError: when ``delay`` and ``schedule`` are combined, the priority is
            unknown, or only one of ``dedup_key`` and ``dedup`` is given
        """
        if (dedup_key is None) != (dedup is None):
            raise StreaqError("give 'dedup_key' and 'dedup' together")
        if dedup_key is not None:
            self.dedup_key, self.dedup = dedup_key, dedup
        if delay is not None and schedule is not None:
            raise StreaqError("use either 'delay' or 'schedule' when enqueuing a task, not both")
        if priority is not None and priority not in self.worker.priorities:
            raise StreaqError(
                f"unknown priority {priority!r}; this worker's priorities are "
                f"{self.worker.priorities}"
            )
        if after is not None:
            self.after = [after] if isinstance(after, str) else list(after)
        self.delay = delay
        self.schedule = schedule
        if isinstance(schedule, str):
            from ._cron import CronSchedule

            CronSchedule(schedule, self.worker.tz)  # validates now, not when a worker runs it
        self.priority = priority
        return self

    # then / otherwise / | / ^ are generated (tools/gen_chains.py) in ChainMixin

    def _link(
        self,
        task: AnyRegisteredTask,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fails_over: bool,
    ) -> Task[Any, Any]:
        """Build the task that runs after this one.

        :param task: the next task, fed this task's result (or, when ``fails_over``, a fallback
            run with this task's own arguments, so ``args`` and ``kwargs`` are not used)
        :param args: extra positional arguments, after the ones this task's result provides
        :param kwargs: keyword arguments of the next task
        :param fails_over: the next task runs only if this one fails
        """
        if fails_over:
            child: Task[Any, Any] = Task(
                self.args, self.kwargs, task, self.worker, _fails_over=True
            )
        else:
            child = Task(args, kwargs, task, self.worker)
        child._after = self
        self._triggers = child
        return child

    def chain(self) -> list[Task[Any, Any]]:
        """This task and the tasks it depends on through ``then``/``otherwise``, root first."""
        tasks: list[Task[Any, Any]] = []
        node: Task[Any, Any] | None = self
        while node is not None and not node._enqueued:
            tasks.append(node)
            # a group's members (and their chains) come before it
            for member in reversed(node._group or ()):
                tasks.extend(reversed(member.chain()))
            node = node._after
        tasks.reverse()
        return tasks

    async def _enqueue(self) -> Task[P, R]:
        if not self._enqueued:
            await self.worker.enqueue_many([self])
        return self

    def __await__(self) -> Generator[Any, None, Task[P, R]]:
        return self._enqueue().__await__()

    async def status(self) -> TaskStatus:
        """Fetch the current status of the task."""
        return await self.worker.status_by_id(self.id)

    async def result(self, timeout: timedelta | int | float | None = None) -> TaskResult[R]:
        """Wait for and return the task's result.

        :param timeout: how long to wait before raising ``TimeoutError``
        :return: the wrapped result
        """
        return await self.worker._client.result(self.id, timeout, self.parent)

    async def abort(self, timeout: timedelta | int = 5) -> bool:
        """Abort the task; a running task is cancelled.

        :param timeout: how long to wait for a running task to confirm
        :return: whether the task was aborted (``False`` when it had finished already)
        """
        return await self.worker.abort_by_id(self.id, timeout=timeout)

    async def info(self) -> TaskInfo | None:
        """Fetch info about a previously enqueued task, unless it finished or doesn't exist."""
        return await self.worker.info_by_id(self.id)

    async def progress(self) -> Any:
        """The latest progress the task reported (``context.progress(value)``), or ``None``.

        It is kept as long as the task's result.
        """
        return await self.worker.progress_by_id(self.id)

    def events(self, since: str = "0") -> AsyncGenerator[TaskEvent, None]:
        """The task's events, from the queue's history on, until its final event.

        ``async for event in task.events(): ...`` ends after the task finished, failed, was
        aborted or dead-lettered (for a repeating task: after a run), or at once when the task
        ended before and its final event is no longer in the (bounded) stream. See
        :meth:`~streaq.worker.Worker.events`.

        :param since: a stream id to read after (``"0"``: the whole history kept)
        :return: an async iterator of :class:`TaskEvent`
        :raises StreaqError: when the worker's ``events_maxlen`` is 0, or ``since`` is malformed
        """
        return self.worker.events(since=since, task_id=self.id, until_final=True)

    async def unschedule(self) -> bool:
        """Stop a repeating (crontab-scheduled) task.

        :return: whether the task was unscheduled
        """
        return await self.worker.unschedule_by_id(self.id)

    async def serialize(self, enqueue_time: int) -> Any:
        """Serialize the task's arguments as they are sent to the queue.

        :param enqueue_time: the time at which the task was enqueued (ms)
        :return: serialized task data
        """
        return self.worker._client.codec.encode_call(self.args, self.kwargs)
