"""Public types of streaq: errors, the task context, callable aliases and type variables.

Error hierarchy::

    Exception
    └── StreaqError            root of streaq's own errors
        ├── StreaqRetry        raised by a task to ask for another try
        ├── StreaqCancelled    the task was aborted (held by its failed TaskResult)
        └── RemoteTaskError    a task raised an exception type that is not rebuilt locally

Redis failures are ``redis.exceptions.*``; a task's own failure is data on its ``TaskResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeAlias, TypeVar, TypeVarTuple

from typing_extensions import TypeVar as TypeVarDefault

__all__ = [
    "AsyncCron",
    "AsyncTask",
    "C",
    "Middleware",
    "P",
    "POther",
    "R",
    "ROther",
    "RemoteTaskError",
    "ReturnCoroutine",
    "StreaqCancelled",
    "StreaqError",
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


ReturnCoroutine: TypeAlias = Callable[..., Coroutine[Any, Any, Any]]
TypedCoroutine: TypeAlias = Coroutine[Any, Any, R]
Middleware: TypeAlias = Callable[[ReturnCoroutine], ReturnCoroutine]
AsyncCron: TypeAlias = Callable[[], TypedCoroutine[R]]
SyncCron: TypeAlias = Callable[[], R]
AsyncTask: TypeAlias = Callable[P, TypedCoroutine[R]]
SyncTask: TypeAlias = Callable[P, R]
