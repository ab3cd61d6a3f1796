"""Public types of streaq: errors, the task context, callable aliases and type variables.

Error hierarchy::

    Exception
    └── StreaqError            root of streaq's own errors
        ├── StreaqRetry        raised by a task to ask for another try
        │   └── StreaqRateLimited   ...later, without counting a try (an external limit)
        ├── StreaqCancelled    the task was aborted (held by its failed TaskResult)
        └── RemoteTaskError    a task raised an exception type that is not rebuilt locally

Redis failures are ``redis.exceptions.*``; a task's own failure is data on its ``TaskResult``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ParamSpec, TypeAlias, TypeVar, TypeVarTuple

from typing_extensions import TypeVar as TypeVarDefault

__all__ = [
    "AsyncCron",
    "AsyncTask",
    "C",
    "Dedup",
    "DedupMode",
    "DedupOutcome",
    "Middleware",
    "P",
    "POther",
    "R",
    "ROther",
    "RateLimit",
    "RemoteTaskError",
    "ReturnCoroutine",
    "StreaqCancelled",
    "StreaqError",
    "StreaqRateLimited",
    "StreaqRetry",
    "SyncCron",
    "SyncTask",
    "TaskContext",
    "Ts",
    "TypedCoroutine",
]

# a worker without a lifespan has the context None: `Worker(...)` needs no annotation
C = TypeVarDefault("C", default=None)
P = ParamSpec("P")
POther = ParamSpec("POther")
R = TypeVar("R")
ROther = TypeVar("ROther")
Ts = TypeVarTuple("Ts")


class StreaqError(Exception):
    """Base class of every error streaq raises itself."""


class StreaqCancelled(StreaqError):
    """The task was aborted; a failed :class:`~streaq.task.TaskResult` holds this exception."""


class StreaqRetry(StreaqError):
    """Raise inside a task to run it again later.

    :param delay: time to wait before the next try; by default ``tries ** 2`` seconds
    :param schedule: a moment at which to run the next try (instead of ``delay``)
    """

    def __init__(
        self,
        *args: Any,
        delay: timedelta | int | float | None = None,
        schedule: datetime | None = None,
    ) -> None:
        super().__init__(*args)
        self.delay = delay
        self.schedule = schedule


class StreaqRateLimited(StreaqRetry):
    """Raise inside a task that met an external rate limit (an HTTP 429, say).

    The task runs again after ``delay`` *without counting a try*, and when its function has flow
    limits (a rate or concurrency limit, group limits), its gate -- its group's, with group
    limits -- admits no other task of it for ``delay`` either: the whole function (or group) backs
    off, not just this task. See :doc:`/flow-control`.

    :param delay: how long to back off (a number of seconds or a ``timedelta``)
    """

    def __init__(self, delay: timedelta | int | float, *args: Any) -> None:
        super().__init__(*args, delay=delay)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` starts per ``period``, across every worker of the queue.

    Enforced as a sliding window: in any ``period`` long stretch of time, no more than ``limit``
    tasks of the function (or of a group, for ``group_rate_limit``) start. ``"100/s"``,
    ``"10/m"``, ``"5/h"``, ``"1000/d"`` and ``"3/10s"`` (3 per 10 seconds) are accepted where a
    ``RateLimit`` is.

    :param limit: starts allowed per period (at least 1)
    :param period: the window's length
    """

    limit: int
    period: timedelta

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise StreaqError(f"a rate limit allows at least 1 start, not {self.limit}")
        if self.period.total_seconds() * 1000 < 1:
            raise StreaqError("a rate limit's period is at least 1 ms")

    @classmethod
    def parse(cls, text: str | RateLimit) -> RateLimit:
        """``"<limit>/<period>"``: the period ``s``, ``m``, ``h``, ``d``, optionally with a count.

        :raises StreaqError: for anything else, saying what is expected
        """
        if isinstance(text, RateLimit):
            return text
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        limit, _, period = text.replace(" ", "").partition("/")
        count = period[:-1] or "1"
        if not (limit.isdigit() and count.isdigit() and period[-1:] in units):
            raise StreaqError(
                f"a rate limit is written like '100/s', '10/m' or '3/10s', not {text!r}"
            )
        return cls(int(limit), timedelta(seconds=int(count) * units[period[-1]]))

    def __str__(self) -> str:
        return f"{self.limit}/{self.period.total_seconds():g}s"


class DedupMode(StrEnum):
    """How a task with a dedup key meets a live task of the same key (see :class:`Dedup`)."""

    #: drop the new task while the key's task is live, or within the window of its enqueue
    THROTTLE = "throttle"
    #: the new task replaces the key's task that has not started, and starts a window later
    DEBOUNCE = "debounce"
    #: while the key's task runs, keep one follow-up holding the latest arguments
    KEEP_LAST = "keep_last"


class DedupOutcome(StrEnum):
    """What became of an enqueued task with a dedup key (``Task.dedup_outcome``)."""

    #: it was enqueued as any task is: no live task held its key
    ENQUEUED = "enqueued"
    #: throttled: it was not enqueued; the handle now names the task that holds the key
    DROPPED = "dropped"
    #: it was enqueued and the key's task that had not started (``Task.dedup_other``) ended
    #: with a ``StreaqCancelled`` result saying it was superseded
    REPLACED = "replaced"
    #: keep-last: it waits for the key's running task (``Task.dedup_other``) to end
    FOLLOWS = "follows"


@dataclass(frozen=True, slots=True)
class Dedup:
    """A dedup mode and its window, given with a dedup key on enqueue.

    Keys are scoped to the task's function and to the mode: ``Dedup.throttle`` and
    ``Dedup.debounce`` on the same key do not meet. Everything is decided atomically on the
    server; see :doc:`/flow-control`.

    :param mode: the mode (build it with :meth:`throttle`, :meth:`debounce` or
        :meth:`keep_last`)
    :param window: the throttle or debounce window (a ``timedelta`` or seconds)
    """

    mode: DedupMode
    window: timedelta | int | float = 0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, DedupMode):
            raise StreaqError(f"unknown dedup mode {self.mode!r}")
        window = self.window
        seconds = window.total_seconds() if isinstance(window, timedelta) else window
        if seconds < 0:
            raise StreaqError("a dedup window must not be negative")
        if self.mode is DedupMode.DEBOUNCE and seconds <= 0:
            raise StreaqError("debounce needs a window longer than 0")

    @classmethod
    def throttle(cls, window: timedelta | int | float = 0) -> Dedup:
        """While the key's task is live (queued, scheduled or running) or less than ``window``
        has passed since it was enqueued, a new task of the key is dropped and its handle names
        the key's task instead. A task that fails, is aborted or dead-lettered frees the key at
        once."""
        return cls(DedupMode.THROTTLE, window)

    @classmethod
    def debounce(cls, window: timedelta | int | float) -> Dedup:
        """A new task of the key starts ``window`` after it is enqueued, and supersedes the key's
        task that has not started yet (claimed by a worker counts as started): that one ends
        with a ``StreaqCancelled`` result naming its successor. A key's task that started runs
        on; the new one is enqueued besides it."""
        return cls(DedupMode.DEBOUNCE, window)

    @classmethod
    def keep_last(cls) -> Dedup:
        """While the key's task runs, a new task of the key waits for it to end, as its one
        follow-up: a later one supersedes the follow-up (latest arguments win). When nothing of
        the key runs, a new task supersedes the key's task that has not started, or runs as any
        task does. Tasks of one key therefore never run at once."""
        return cls(DedupMode.KEEP_LAST)


class RemoteTaskError(StreaqError):
    """A task failed with an exception type that is not rebuilt on this side.

    streaq never imports or unpickles a type named by queue data; instead the failure arrives
    as this error, carrying what the worker saw.

    :param type_name: qualified name of the exception type raised in the task
    :param message: ``str()`` of the original exception
    :param remote_traceback: the formatted traceback from the worker
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Facts about the running task, available as ``some_task.context`` inside it.

    :param fn_name: registered name of the task
    :param task_id: id of this task
    :param timeout: time limit of one try, if any
    :param tries: number of this try, starting at 1
    :param ttl: how long the result is kept
    :param trace_context: the enqueuing code's trace context (W3C headers), when a tracer
        carried one (see ``streaq.contrib.otel``)
    """

    fn_name: str
    task_id: str
    timeout: timedelta | int | None
    tries: int
    ttl: timedelta | int | None
    trace_context: dict[str, str] | None = None
    _report: Callable[[Any], Awaitable[None]] | None = field(
        default=None, repr=False, compare=False
    )

    def progress(self, value: Any) -> Awaitable[None]:
        """Report the task's progress: any value msgpack (or the worker's serializer) encodes,
        up to 4 KiB encoded, e.g. ``0.5`` or ``{"done": 3, "of": 10}``.

        In an async task, await it: ``await ctx.progress(0.5)`` returns once it is recorded. In
        a sync task (a worker thread), ``ctx.progress(0.5)`` returns once it is recorded (what it
        returns need not be awaited). The value is what ``task.progress()`` and
        ``TaskInfo.progress`` read until the next report, and each report is a progress event of
        the queue's event stream. A report after the task lost its message (taken over by
        another worker) is dropped.

        :param value: the progress to report
        :return: an awaitable (already done in a sync task)
        :raises StreaqError: outside a task run by a worker, or for a value too large
        """
        if self._report is None:
            raise StreaqError("progress can only be reported by a task a worker runs")
        return self._report(value)


ReturnCoroutine: TypeAlias = Callable[..., Coroutine[Any, Any, Any]]
TypedCoroutine: TypeAlias = Coroutine[Any, Any, R]
Middleware: TypeAlias = Callable[[ReturnCoroutine], ReturnCoroutine]
AsyncCron: TypeAlias = Callable[[], TypedCoroutine[R]]
SyncCron: TypeAlias = Callable[[], R]
AsyncTask: TypeAlias = Callable[P, TypedCoroutine[R]]
SyncTask: TypeAlias = Callable[P, R]
