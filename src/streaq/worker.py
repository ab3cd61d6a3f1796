"""The :class:`Worker`: task registry, producer API and the process that runs tasks.

A worker is both a client (``async with worker:`` connects, then ``await task.enqueue(...)``,
``await task.result()``) and, through :meth:`Worker.run_async` / :meth:`Worker.run_sync`, the
consumer that executes tasks. The run loop itself lives in ``streaq._runtime``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, timedelta, tzinfo
from typing import Any, Generic

import anyio
import anyio.abc

from ._codec import Codec, Deserializer, Serializer
from ._dlq import DeadLetter
from ._events import DEFAULT_EVENTS_MAXLEN, check_kinds, check_since, read_events, read_progress
from ._flow import FlowInfo
from ._groups import GroupsMixin
from ._inspect import CronInfo, PriorityInfo, QueueSnapshot, WorkerBeat, inspect_worker
from ._keys import QueueKeys
from ._queue import QueueClient
from ._redis import RedisClient
from ._redis_handle import RedisCommands, RedisPool
from ._registration import TaskRegistry
from ._runtime import RunHandle, run_worker
from ._schema import DEFAULT_TTL
from .task import (
    AnyRegisteredTask,
    EventKind,
    RegisteredMiddleware,
    SyncRegisteredTask,
    Task,
    TaskEvent,
    TaskInfo,
    TaskResult,
    TaskStatus,
)
from .types import C, StreaqError
from .utils import now_ms

__all__ = [
    "CronInfo",
    "FlowInfo",
    "PriorityInfo",
    "QueueSnapshot",
    "RedisCommands",
    "RedisPool",
    "Worker",
    "WorkerBeat",
]

logger = logging.getLogger("streaq")

DEFAULT_REDIS_URL = "redis://localhost:6379"
REDIS_MIN_VERSION = (7, 0, 0)
COUNTER_NAMES = ("completed", "failed", "retried", "aborted", "relinquished")


@asynccontextmanager
async def _no_lifespan() -> AsyncIterator[None]:
    yield None


class Worker(TaskRegistry, GroupsMixin, Generic[C]):
    """A queue's task registry, its producer API and its task runner.

    :param redis_url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL
    :param redis_kwargs: extra connection options (timeouts, TLS files, client name, ...);
        streaq 7.2's ``decode_responses`` is accepted and ignored
    :param concurrency: tasks running at once in this worker
    :param sync_concurrency: threads for sync tasks (default: ``concurrency``)
    :param queue_name: namespace of the queue's keys
    :param priorities: priority names, lowest first (the caller's list is copied)
    :param prefetch: messages fetched beyond those running (default ``concurrency``; 0 disables)
    :param lifespan: async context manager factory entered once while the worker runs
    :param serializer: replaces msgpack for arguments and results (e.g. ``pickle.dumps``)
    :param deserializer: its inverse (e.g. ``pickle.loads``)
    :param tz: time zone for cron and log timestamps
    :param handle_signals: stop gracefully on SIGINT/SIGTERM while running
    :param signing_secret: HMAC secret signing every task and sealing every result (see
        :doc:`/security`); a list rotates secrets: the first signs, any verifies
    :param encryption_key: secret encrypting arguments, results and errors with AES-256-GCM
        (extra ``streaq[encryption]``); a list rotates keys: the first encrypts, any decrypts
    :param idle_timeout: a running task's lease; another worker takes over a task idle this long
    :param grace_period: time running tasks get to finish after SIGINT/SIGTERM
    :param anyio_backend: ``"asyncio"`` or ``"trio"``, used by :meth:`run_sync`
    :param anyio_kwargs: backend options, e.g. ``{"use_uvloop": True}``
    :param sentinel_nodes: Sentinel addresses (host, port), to use Redis Sentinel
    :param sentinel_master: name of the Sentinel master
    :param sentinel_kwargs: options for the connections to the sentinels
    :param cluster_nodes: startup nodes, to use Redis Cluster
    :param id: worker id (consumer name), unique per queue
    :param redis_pool: a :class:`RedisPool` to share with other workers and the application,
        instead of a connection of the worker's own; it carries the connection settings, so
        ``redis_url``, ``redis_kwargs``, ``sentinel_*`` and ``cluster_nodes`` are not given then
    :param events_maxlen: about how many entries the queue's event stream keeps (the oldest are
        trimmed; see :doc:`/events`); 0 writes no events. Give producers and workers the same
        setting: each writes the events of what it does
    :raises StreaqError: for invalid options, or a ``redis_pool`` that is not a
        :class:`RedisPool` (e.g. a coredis pool)
    :raises TypeError: for an unknown option in ``redis_kwargs``
    :raises ValueError: for a malformed ``redis_url`` or option value
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        redis_kwargs: dict[str, Any] | None = None,
        concurrency: int = 16,
        sync_concurrency: int | None = None,
        queue_name: str = "default",
        priorities: Iterable[str] | None = None,
        prefetch: int | None = None,
        lifespan: Callable[[], AbstractAsyncContextManager[C]] | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        tz: tzinfo = UTC,
        handle_signals: bool = True,
        signing_secret: str | bytes | Sequence[str | bytes] | None = None,
        idle_timeout: timedelta | int = 60,
        grace_period: timedelta | int = 0,
        anyio_backend: str = "asyncio",
        anyio_kwargs: dict[str, Any] | None = None,
        sentinel_nodes: list[tuple[str, int]] | None = None,
        sentinel_master: str = "mymaster",
        sentinel_kwargs: dict[str, Any] | None = None,
        cluster_nodes: list[tuple[str, int]] | None = None,
        id: str | None = None,
        redis_pool: RedisPool | None = None,
        encryption_key: str | bytes | Sequence[str | bytes] | None = None,
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
    ) -> None:
        if concurrency < 1:
            raise StreaqError("concurrency must be at least 1")
        if events_maxlen < 0:
            raise StreaqError(
                f"events_maxlen is a number of events, 0 or more, not {events_maxlen!r}"
            )
        options = dict(redis_kwargs or {})
        if options.pop("decode_responses", None) is not None:
            logger.debug("redis_kwargs: decode_responses ignored, streaq decodes results itself")
        if redis_pool is None:
            redis_pool = RedisPool(
                redis_url,
                sentinel_nodes=sentinel_nodes,
                sentinel_master=sentinel_master,
                sentinel_kwargs=sentinel_kwargs,
                cluster_nodes=cluster_nodes,
                **options,
            )
        elif not isinstance(redis_pool, RedisPool):
            kind = f"{type(redis_pool).__module__}.{type(redis_pool).__qualname__}"
            raise StreaqError(
                f"redis_pool must be a streaq.RedisPool (from streaq import RedisPool), not {kind}"
            )
        elif (
            options
            or sentinel_nodes
            or sentinel_kwargs
            or cluster_nodes
            or redis_url != DEFAULT_REDIS_URL
        ):
            raise StreaqError(
                "the redis_pool carries the connection settings: give redis_url, redis_kwargs, "
                "sentinel_nodes or cluster_nodes to the RedisPool, not to the Worker"
            )
        #: the connection settings, and while the worker is entered its shared client
        self.redis_pool = redis_pool
        self.redis_url = redis_pool.url
        self.redis_kwargs = redis_pool.options
        self.sentinel_nodes = redis_pool.sentinel_nodes
        self.sentinel_master = redis_pool.sentinel_master
        self.sentinel_kwargs = redis_pool.sentinel_kwargs
        self.cluster_nodes = redis_pool.cluster_nodes
        self.concurrency = concurrency
        self.sync_concurrency = sync_concurrency or concurrency
        self.queue_name = queue_name
        self.priorities = list(priorities) if priorities is not None else ["normal"]
        if not self.priorities or len(set(self.priorities)) != len(self.priorities):
            raise StreaqError("priorities must be a non-empty list of distinct names")
        self.prefetch = concurrency if prefetch is None else prefetch
        # what follows the concurrency when set_concurrency changes it
        self._derived = (prefetch is None, sync_concurrency is None)
        if self.prefetch < 0:
            raise StreaqError("prefetch must not be negative")
        self.lifespan: Callable[[], AbstractAsyncContextManager[Any]] = lifespan or _no_lifespan
        self.tz = tz
        self.handle_signals = handle_signals
        self.idle_timeout = idle_timeout
        self.grace_period = grace_period
        self.anyio_backend = anyio_backend
        self.anyio_kwargs = dict(anyio_kwargs or {})
        self.id = id or uuid.uuid4().hex[:8]
        self.burst = False
        #: gives the current trace context (W3C headers) to store with every enqueued task;
        #: set by ``streaq.contrib.otel.instrument``
        self.trace_carrier: Callable[[], dict[str, str]] | None = None
        self.registry: dict[str, AnyRegisteredTask] = {}
        self.middlewares: list[RegisteredMiddleware] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.codec = Codec(serializer, deserializer, signing_secret, encryption_key)
        self.keys = QueueKeys(queue_name)
        #: the bound of the queue's event stream (0: no events are written)
        self.events_maxlen = events_maxlen
        self._client_or_none: QueueClient | None = None
        self._stack: AsyncExitStack | None = None
        self._entered = 0
        self._run = RunHandle()

    def __str__(self) -> str:
        counters = " ".join(f"{k}={v}" for k, v in self.counters.items() if v)
        return f"worker {self.id}" + (f" {counters}" if counters else "")

    def __repr__(self) -> str:
        return f"<Worker {self.id} queue={self.queue_name!r} tasks={len(self.registry)}>"

    # connection

    def _open_redis(self, **overrides: Any) -> AbstractAsyncContextManager[RedisClient]:
        """A Redis client of its own on this worker's settings (``async with``).

        :param overrides: connection options replacing the worker's ``redis_kwargs`` ones
        """
        # under Cluster, blocking reads and pub/sub go to the queue's slot
        return self.redis_pool._open(cluster_home_key=self.keys.prefix, **overrides)

    @property
    def redis(self) -> RedisCommands:
        """Redis commands on the worker's client, e.g. ``await worker.redis.get(key)``.

        String replies are ``bytes``: streaq's client never decodes (7.2's returned ``str``).

        :raises StreaqError: when the worker is not entered (``async with worker:``) or running
        """
        return RedisCommands(self._client.redis)

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key of the queue, ``streaq:{<queue_name>}:``.

        Keys of your own that start with it live in the queue's Redis Cluster slot.
        """
        return self.keys.prefix

    @property
    def _client(self) -> QueueClient:
        if self._client_or_none is None:
            raise StreaqError(
                "the worker is not connected: use `async with worker:` or run the worker"
            )
        return self._client_or_none

    async def __aenter__(self) -> Worker[C]:
        self._entered += 1
        if self._entered > 1:
            return self
        stack = AsyncExitStack()
        try:
            redis = await stack.enter_async_context(self.redis_pool._use(self.keys.prefix))
            redis.require_version(REDIS_MIN_VERSION, "Redis functions and XAUTOCLAIM")
            logger.debug(
                "established connection to %s (Redis %s) for queue %r",
                self.redis_pool.describe(),
                ".".join(map(str, redis.server_version)),
                self.queue_name,
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            client = QueueClient(
                redis, self.keys, self.codec, self.priorities, self.registry, tg, self.events_maxlen
            )
            await client.prepare()
        except BaseException:
            self._entered -= 1
            await stack.aclose()
            raise
        self._stack = stack
        self._client_or_none = client
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entered -= 1
        if self._entered > 0:
            return
        stack, self._stack, self._client_or_none = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # producer API

    async def enqueue_many(self, tasks: Iterable[Task[Any, Any]]) -> None:
        """Enqueue many tasks (with their chains) in one round trip per 500 tasks."""
        await self._client.enqueue_many(tasks, self.tz, self.trace_carrier)

    def enqueue_unsafe(self, fn_name: str, *args: Any, **kwargs: Any) -> Task[Any, Any]:
        """A task for the function registered as ``fn_name`` elsewhere; await it to enqueue."""
        parent = self.registry.get(fn_name)
        if parent is None:
            parent = SyncRegisteredTask(
                fn=_unknown,
                fn_name=fn_name,
                worker=self,
                expire=None,
                max_schedule_drift=None,
                max_tries=3,
                silent=False,
                timeout=None,
                ttl=DEFAULT_TTL,
                unique=False,
                crontab=None,
            )
            parent.spec = None  # type: ignore[assignment]
        return Task(args, kwargs, parent, self)

    async def pause(self, task: str | AnyRegisteredTask | None = None) -> bool:
        """Pause a task function (every task of the queue when ``None``), on every worker.

        Its tasks start no more (within moments: workers hear it on a channel) and new ones wait;
        running ones go on. See :doc:`/flow-control`.

        :param task: the registered task, or its name
        :return: whether it was running before (``False``: it was paused already)
        """
        name = "*" if task is None else task if isinstance(task, str) else task.fn_name
        return await self._client.functions.pause(name, now_ms(), True)

    async def resume(self, task: str | AnyRegisteredTask | None = None) -> bool:
        """Resume a paused task function (the whole queue when ``None``).

        :return: whether it was paused before
        """
        name = "*" if task is None else task if isinstance(task, str) else task.fn_name
        return await self._client.functions.pause(name, now_ms(), False)

    def set_concurrency(self, concurrency: int) -> None:
        """Change how many tasks this worker runs at once, while it runs (or for its next run).

        The prefetch and ``sync_concurrency`` follow when they were not given (they default to
        the concurrency). Lowered, running tasks finish and no new one starts until fewer than
        ``concurrency`` run; raised, more start at once. To change every running worker of the
        queue, use :meth:`scale` (or ``streaq scale``). See :doc:`/flow-control`.

        :param concurrency: tasks running at once (at least 1)
        :raises StreaqError: for less than 1
        """
        if concurrency < 1:
            raise StreaqError("concurrency must be at least 1")
        self.concurrency = concurrency
        prefetch_derived, sync_derived = self._derived
        if prefetch_derived:
            self.prefetch = concurrency
        if sync_derived:
            self.sync_concurrency = concurrency
        state = self._run.state
        if state is not None:
            state.set_concurrency(concurrency, self.prefetch, self.sync_concurrency)
            logger.info("worker %s runs %d task(s) at once now", self.id, concurrency)

    async def scale(self, concurrency: int) -> None:
        """Set the concurrency of every worker of the queue running now, as
        :meth:`set_concurrency` does in each (a worker started later keeps its own).

        Workers hear it on a channel, and a worker whose subscription was down reads it when it
        subscribes again.

        :param concurrency: tasks running at once in each worker (at least 1)
        :raises StreaqError: for less than 1
        """
        if concurrency < 1:
            raise StreaqError("concurrency must be at least 1")
        await self._client.functions.scale(concurrency)

    async def queue_size(self, include_scheduled: bool = True) -> int:
        """Number of tasks waiting to run (with delayed and dependent ones by default)."""
        return await self._client.queue_size(include_scheduled)

    async def status_by_id(self, task_id: str) -> TaskStatus:
        """Current status of the task ``task_id``."""
        return await self._client.status(task_id)

    async def result_by_id(
        self, task_id: str, timeout: timedelta | int | float | None = None
    ) -> TaskResult[Any]:
        """Wait for the result of ``task_id``.

        :raises TimeoutError: when no result arrives within ``timeout``
        """
        return await self._client.result(task_id, timeout)

    async def abort_by_id(self, task_id: str, timeout: timedelta | int | float = 5) -> bool:
        """Abort ``task_id``; ``True`` when it was stopped."""
        return await self._client.abort(task_id, timeout)

    async def abort_requested(self, task_id: str) -> bool:
        """Whether the claimed task ``task_id`` has been asked to abort and not settled since.

        A middleware whose task was cancelled can tell an abort from a hand-back (shutdown, or a
        takeover by another worker) with it; a timeout is neither.

        :param task_id: the task's id
        :return: ``True`` while an abort of the task is pending
        :raises StreaqError: when the worker is not entered (``async with worker:``) or running
        """
        client = self._client
        return bool(await client.redis.execute("SISMEMBER", self.keys.abort_set, task_id))

    async def info_by_id(self, task_id: str) -> TaskInfo | None:
        """Facts about the unfinished task ``task_id``, or ``None``."""
        return await self._client.info(task_id)

    async def progress_by_id(self, task_id: str) -> Any:
        """The latest progress ``task_id`` reported (``context.progress(value)``), or ``None``.

        :raises StreaqError: when the worker is not entered (``async with worker:``) or running
        """
        return await read_progress(self._client, task_id)

    def events(
        self,
        since: str | None = None,
        task_id: str | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        *,
        until_final: bool = False,
    ) -> AsyncGenerator[TaskEvent, None]:
        """Follow the queue's event stream: ``async for event in worker.events(): ...``.

        Reads block on a connection of their own; after a lost connection the read resumes
        after the last event seen, so nothing the stream still holds is missed. Leave the loop
        to stop (``contextlib.aclosing`` closes the connection at once). See :doc:`/events`.

        :param since: a stream id to read after: an event's :attr:`~TaskEvent.id` to resume,
            ``"0"`` for the whole history kept; ``None`` (default) for events from now on
        :param task_id: only the events of this task
        :param kinds: only events of these kinds (:class:`~streaq.task.EventKind` or names)
        :param until_final: end after the final event of ``task_id`` (what ``task.events()``
            does)
        :return: an async iterator of :class:`~streaq.task.TaskEvent`
        :raises StreaqError: when ``events_maxlen`` is 0, for a malformed ``since`` or an unknown
            kind, for ``until_final`` without ``task_id``, or when the worker is not entered
        """
        if self.events_maxlen == 0:
            raise StreaqError("events are off for this worker (events_maxlen=0)")
        chosen = check_kinds(kinds)
        if since is not None:
            check_since(since)
        if until_final and task_id is None:
            raise StreaqError("until_final needs a task_id")
        return read_events(self._client, since, task_id, chosen, until_final)

    async def get_tasks_by_status(
        self,
        status: TaskStatus,
        *,
        priority: str | None = None,
        limit: int = 100,
        scan_limit: int | None = None,
    ) -> list[TaskInfo] | list[TaskResult[Any]]:
        """Up to ``limit`` tasks in ``status``: ``TaskResult`` for DONE, ``TaskInfo`` otherwise.

        :param status: SCHEDULED, QUEUED, RUNNING or DONE
        :param priority: only tasks of this priority (unfinished tasks)
        :param limit: the most tasks to return
        :param scan_limit: examine about this many keys at most (DONE: keys of the database,
            which ``SCAN`` walks whole; otherwise entries of the queue's task index), so the
            answer may miss tasks; ``None`` looks everywhere
        """
        from ._listing import tasks_by_status

        return await tasks_by_status(self._client, status, priority, limit, scan_limit)

    async def finished_tasks(
        self,
        limit: int = 100,
        *,
        offset: int = 0,
        failed_only: bool = False,
        scan_limit: int | None = None,
    ) -> list[TaskResult[Any]]:
        """Stored results, most recently finished first (``limit`` of them from ``offset`` on).

        :param failed_only: only failures (errors, timeouts, aborts, failed dependencies)
        :param scan_limit: examine about this many keys of the database at most (``SCAN``
            walks it whole): the answer then sorts the results found in that part only
        :raises ValueError: for a ``scan_limit`` below 1, a negative ``limit`` or ``offset``
        """
        from ._listing import recent_results

        return await recent_results(self._client, limit, offset, failed_only, scan_limit)

    async def arguments_by_id(self, task_id: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The arguments ``task_id`` was called with: an unfinished task's, or a failed task's
        while its result is kept (see :meth:`retry_by_id`); ``None`` otherwise.

        :raises StreaqError: when they cannot be decoded, decrypted or verified
        """
        from ._failed import kept_arguments

        kept = await kept_arguments(self._client, task_id)
        if kept is not None:
            return kept
        info = await self.info_by_id(task_id)
        return None if info is None else (info.args, info.kwargs)

    async def retry_by_id(self, task_id: str) -> bool:
        """Queue the failed task ``task_id`` again, under its id, with the same arguments.

        A failed task's call is kept as long as its result; the retry starts with no tries so far
        and deletes the failed result, so that waiters wait for the new run.

        :return: ``False`` when there is nothing to retry (it did not fail, its result expired or
            was deleted, or it was retried already)
        :raises StreaqError: when a live task holds the id, or the kept call fails verification
        """
        from ._failed import retry_failed

        return await retry_failed(self._client, task_id)

    async def delete_by_id(self, task_id: str) -> bool:
        """Delete the stored result of the finished task ``task_id`` (and its kept call).

        :return: ``False`` when there was no result
        :raises StreaqError: when the task is not finished (abort it instead)
        """
        from ._failed import delete_result

        return await delete_result(self._client, task_id)

    async def finish_times(self) -> list[tuple[int, bool]]:
        """When each stored result finished, and whether it succeeded.

        Every result key of the queue is read (``SCAN`` and ``MGET``, hundreds per round trip),
        so every worker's finishes count; only the header of each record is decoded, never the
        result itself. Results stored with ``ttl=0``, or already expired, are not seen.

        :return: ``(finish_ms, success)`` per stored result (finish time in ms since the epoch),
            in no particular order
        :raises StreaqError: when the worker is not entered (``async with worker:``) or running
        """
        from ._listing import finish_times

        return (await finish_times(self._client))[0]

    async def sample_finish_times(self, scan_limit: int) -> tuple[list[tuple[int, bool]], bool]:
        """:meth:`finish_times` of the results found in about ``scan_limit`` keys of the database.

        ``SCAN`` walks the whole database, not only the queue's keys: this bounds the work of a
        call made often (the web UI's overview) on a database of any size.

        :param scan_limit: the most keys to examine (at least 1)
        :return: the finish times found, and whether the scan covered the whole database (then
            they are all of them)
        :raises StreaqError: when the worker is not entered (``async with worker:``) or running
        """
        from ._listing import finish_times

        return await finish_times(self._client, scan_limit)

    async def inspect(self) -> QueueSnapshot:
        """A snapshot of the queue's state: what ``streaq info`` shows.

        Read on a connection of its own in two round trips, writing nothing, so the worker need
        not be entered (entering prepares the queue, a write) and may run in another process.

        :return: counts per priority and state, lag, delayed and waiting tasks, dead letters,
            worker heartbeats and the registered cron jobs with their next firing
        :raises redis.exceptions.RedisError: when Redis cannot be read
        """
        return await inspect_worker(self)

    async def unschedule_by_id(self, task_id: str) -> bool:
        """Stop the repeating task ``task_id``; ``True`` when it was scheduled."""
        return await self._client.unschedule(task_id)

    # dead letters (see streaq._dlq)

    async def dead_letters(self, limit: int | None = 100) -> list[DeadLetter]:
        """The oldest ``limit`` entries of the queue's dead-letter stream (all with ``None``).

        A message lands there when it can never succeed: delivered more than ``max_tries`` times
        because its workers kept dying, an undecodable payload, or an unknown function. Its
        failed result was written at the same moment.
        """
        from ._dlq import list_dead_letters

        return await list_dead_letters(self._client, limit)

    async def replay_dead_letters(self, task_ids: Iterable[str] | None = None) -> list[str]:
        """Queue dead-lettered tasks again as fresh tasks (same id, no tries so far).

        :param task_ids: the tasks to replay; every dead letter when ``None``
        :return: the ids of the tasks queued again (their old failed results are deleted)
        """
        from ._dlq import replay_dead_letters

        return await replay_dead_letters(self._client, task_ids)

    async def purge_dead_letters(self, task_ids: Iterable[str] | None = None) -> int:
        """Delete dead letters of ``task_ids`` (every one when ``None``); the number deleted."""
        ids = [] if task_ids is None else list(task_ids)
        if task_ids is not None and not ids:
            return 0
        return await self._client.functions.purge_dead_letters(ids)

    # running

    @property
    def context(self) -> C:
        """The value of the lifespan, while the worker runs.

        :raises StreaqError: when the worker is not running
        """
        if self._run.context is None:
            raise StreaqError("worker context is only available while the worker runs")
        return self._run.context[0]  # type: ignore[no-any-return]

    def running(self) -> int:
        """Number of tasks running in this worker now."""
        state = self._run.state
        return 0 if state is None else state.running()

    async def run_async(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the worker until it is stopped (signal, burst end, or cancellation).

        Embeddable: ``await tg.start(worker.run_async)`` returns once the worker runs.
        """
        await run_worker(self, self._run, task_status=task_status)

    def run_sync(self) -> None:
        """Run the worker on the backend given by ``anyio_backend`` until it stops."""
        anyio.run(self.run_async, backend=self.anyio_backend, backend_options=self.anyio_kwargs)


def _unknown(*args: Any, **kwargs: Any) -> Any:
    raise StreaqError("this task is not registered in this process")
