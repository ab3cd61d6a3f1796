"""Registering tasks, cron jobs and middlewares on a worker (the ``Worker`` methods that do it).

A :class:`TaskRegistry` is a base of :class:`~streaq.Worker`: it holds the registry of a queue's
task functions by name and the decorators that fill it, checking each task's options when it is
registered (a crontab that does not parse, a unique task without a timeout, flow limits that do not
fit together), so that mistakes show at import time, not when a worker runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, cast, overload

from ._cron import CronSchedule
from ._flow import FlowLimits, GroupBy
from ._schema import DEFAULT_TTL
from .task import AnyRegisteredTask, AsyncRegisteredTask, RegisteredMiddleware, SyncRegisteredTask
from .types import AsyncTask, P, R, RateLimit, ReturnCoroutine, StreaqError, SyncTask

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["TaskRegistry"]


class TaskRegistry:
    """The task registry of a worker and its decorators (see :class:`~streaq.Worker`)."""

    registry: dict[str, AnyRegisteredTask]
    middlewares: list[RegisteredMiddleware]
    tz: tzinfo

    @overload
    def task(self, fn: AsyncTask[P, R], /) -> AsyncRegisteredTask[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def task(self, fn: SyncTask[P, R], /) -> SyncRegisteredTask[P, R]: ...
    @overload
    def task(
        self,
        *,
        expire: timedelta | int | None = None,
        max_tries: int | None = 3,
        name: str | None = None,
        retry_timeouts: bool = False,
        silent: bool = False,
        timeout: timedelta | int | None = None,
        ttl: timedelta | int | None = DEFAULT_TTL,
        unique: bool = False,
        concurrency_limit: int | None = None,
        rate_limit: str | RateLimit | None = None,
        group_by: GroupBy | None = None,
        group_concurrency: int | None = None,
        group_rate_limit: str | RateLimit | None = None,
    ) -> _TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        expire: timedelta | int | None = None,
        max_tries: int | None = 3,
        name: str | None = None,
        retry_timeouts: bool = False,
        silent: bool = False,
        timeout: timedelta | int | None = None,
        ttl: timedelta | int | None = DEFAULT_TTL,
        unique: bool = False,
        concurrency_limit: int | None = None,
        rate_limit: str | RateLimit | None = None,
        group_by: GroupBy | None = None,
        group_concurrency: int | None = None,
        group_rate_limit: str | RateLimit | None = None,
    ) -> Any:
        """Register a task; usable bare (``@worker.task``) or with options.

        :param expire: drop the task (with a failed result) if it has not started in time
        :param max_tries: deliveries allowed, crash recoveries included; ``None`` = unlimited
        :param name: registered name (default: the function's qualified name)
        :param retry_timeouts: retry a try that timed out instead of failing
        :param silent: log nothing per task
        :param timeout: time limit of one try
        :param ttl: result retention; ``None`` keeps forever, ``0`` only wakes waiters
        :param unique: at most one running instance of the function: an instance that starts
            while another runs fails with :class:`~streaq.types.StreaqError` (needs a
            ``timeout``)
        :param concurrency_limit: at most this many instances run at once across every worker
            of the queue (see :doc:`/flow-control`)
        :param rate_limit: at most so many starts per period across every worker, e.g.
            ``"100/s"``, ``"10/m"`` or a :class:`~streaq.types.RateLimit`
        :param group_by: computes a task's group key from its arguments (e.g. a tenant id);
            waiting tasks are admitted round-robin across keys, so no key starves the others
        :param group_concurrency: at most this many instances of one group key at once
        :param group_rate_limit: at most so many starts of one group key per period
        :raises StreaqError: for ``unique=True`` without a ``timeout``, or inconsistent limits
        """

        def register(func: Callable[..., Any]) -> Any:
            fn_name = name or func.__qualname__
            flow = FlowLimits.build(
                fn_name,
                concurrency_limit,
                rate_limit,
                group_by,
                group_concurrency,
                group_rate_limit,
            )
            return self._register(
                func,
                flow=flow,
                expire=expire,
                max_tries=max_tries,
                name=name,
                retry_timeouts=retry_timeouts,
                silent=silent,
                timeout=timeout,
                ttl=ttl,
                unique=unique,
                crontab=None,
                max_schedule_drift=None,
            )

        return register if fn is None else register(fn)

    def cron(
        self,
        tab: str,
        *,
        max_schedule_drift: timedelta | int | None = None,
        max_tries: int | None = 3,
        name: str | None = None,
        retry_timeouts: bool = False,
        silent: bool = False,
        timeout: timedelta | int | None = timedelta(hours=1),
        ttl: timedelta | int | None = DEFAULT_TTL,
        unique: bool = True,
    ) -> _TaskDecorator:
        """Register a function without parameters, fired on the crontab ``tab``.

        :raises StreaqError: for an invalid crontab, or ``timeout=None`` (at decoration time)
        """
        CronSchedule(tab, self.tz)

        def register(func: Callable[..., Any]) -> Any:
            return self._register(
                func,
                expire=None,
                max_tries=max_tries,
                name=name,
                retry_timeouts=retry_timeouts,
                silent=silent,
                timeout=timeout,
                ttl=ttl,
                unique=unique,
                crontab=tab,
                max_schedule_drift=max_schedule_drift,
                flow=None,
            )

        return register  # type: ignore[return-value]

    def _register(self, func: Callable[..., Any], *, name: str | None, **options: Any) -> Any:
        fn_name = name or func.__qualname__
        if fn_name in self.registry:
            raise StreaqError(f"a task named {fn_name!r} is registered already")
        if options["timeout"] is None and (options["unique"] or options["crontab"]):
            # the unique lock (cron jobs are unique by default) is held at most this long, so
            # that a run whose worker died does not lock the function out forever
            kind = "cron job" if options["crontab"] else "unique task"
            raise StreaqError(f"{kind} {fn_name!r} needs a timeout")
        cls: Any = AsyncRegisteredTask if _is_async(func) else SyncRegisteredTask
        registered = cls(fn=func, fn_name=fn_name, worker=cast("Worker[Any]", self), **options)
        self.registry[fn_name] = registered
        return registered

    def middleware(self, fn: Callable[[ReturnCoroutine], ReturnCoroutine]) -> RegisteredMiddleware:
        """Register a middleware: it takes the next callable and returns an async wrapper.

        The first registered middleware is the outermost.
        """
        registered = RegisteredMiddleware(fn)
        self.middlewares.append(registered)
        return registered

    def include(self, other: Worker[Any]) -> None:
        """Take over another worker's tasks, cron jobs and middlewares (modular apps).

        :raises StreaqError: when a task name is registered on both
        """
        for fn_name, registered in other.registry.items():
            if fn_name in self.registry:
                raise StreaqError(f"a task named {fn_name!r} is registered already")
            registered.worker = cast("Worker[Any]", self)
            self.registry[fn_name] = registered
        self.middlewares.extend(other.middlewares)


class _TaskDecorator:
    """The decorator returned by ``@worker.task(...)`` (typed in the stub-like overloads)."""

    @overload
    def __call__(self, fn: AsyncTask[P, R], /) -> AsyncRegisteredTask[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: SyncTask[P, R], /) -> SyncRegisteredTask[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Any: ...


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )
