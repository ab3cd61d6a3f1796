"""Running one job: checks, argument decoding, the call in its own cancel scope, the outcome.

Each job runs in a :class:`anyio.CancelScope` of its own, which an abort request, the lease
keeper (the job was taken over by another worker) or the end of a shutdown's grace period cancels;
``fail_after`` inside it enforces the task's timeout. A sync task runs in a worker thread; its slot
of ``sync_concurrency`` is held until the thread ends, even when the task was cancelled and the
thread abandoned (a thread cannot be stopped), so that no more than ``sync_concurrency`` threads
ever run tasks. Whatever happens, the job ends with an outcome -- a result record, a retry or a
hand-back -- that the finisher records in Redis; a failing task is data, never a crashed worker.

``unique=True`` means what it means in streaq 7.2: at most one instance of the function runs at a
time, and an instance that starts while another runs ends at once with a failed result (a
:class:`~streaq.types.StreaqError`). The lock is taken when the task starts and is released with
whatever outcome the task reaches (the ``c`` part of every outcome names the function).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import msgspec

from .._codec import (
    KIND_ERROR,
    KIND_RESULTS,
    KIND_TUPLE,
    KIND_VALUES,
    ArgumentError,
    encode_fields,
)
from .._cron import CronSchedule, firing_time_ms
from .._encryption import DecryptionError
from .._queue import group_results
from .._schema import (
    F_CRONTAB,
    F_EXPIRE,
    F_LAST_ERROR,
    F_PARENT_ID,
    F_PARENT_KIND,
    F_PARENT_VALUE,
    F_PAYLOAD,
    F_TRACE,
    F_TRIES,
    HAND_BACK,
    REPEAT,
    RESULT,
    RETRY,
)
from .._signing import F_SIGNATURE, SignatureError
from ..task import AnyRegisteredTask, AsyncRegisteredTask, _current_context
from ..types import StreaqCancelled, StreaqError, StreaqRateLimited, StreaqRetry
from ..utils import now_ms, to_ms, to_seconds
from ._poison import dead_letter, find_poison, undecodable
from ._progress import ProgressReporter
from ._retry import retrying
from ._state import Job, WorkerState

Call = Callable[..., Coroutine[Any, Any, Any]]


class Runner:
    """Executes jobs for one worker run.

    :param state: the run's shared state
    """

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.worker = state.worker
        self.codec = state.client.codec
        self.log = state.log
        self.limiter = anyio.CapacityLimiter(self.worker.sync_concurrency)
        state.sync_limiter = self.limiter
        # the threads themselves are bounded by ``limiter``, whose slots outlive cancellation
        self._threads = anyio.CapacityLimiter(math.inf)
        self._calls: dict[str, Call] = {}
        self.idle_ms = int((to_seconds(self.worker.idle_timeout) or 60.0) * 1000)

    def _call_for(self, task: AnyRegisteredTask) -> Call:
        call = self._calls.get(task.fn_name)
        if call is None:
            if isinstance(task, AsyncRegisteredTask):
                call = task.fn
            else:
                call = _in_thread(task.fn, self.limiter, self._threads)
            for middleware in reversed(self.worker.middlewares):
                call = middleware(call)
            self._calls[task.fn_name] = call
        return call

    def _unique(self, task: AnyRegisteredTask | None) -> str:
        """The name every outcome of ``task`` carries to release its unique lock ('' if none)."""
        return task.fn_name if task is not None and task.unique else ""

    def fail(self, job: Job, exc: BaseException, start: int = 0) -> None:
        """Decide a failed result for ``job``."""
        record = job.record(KIND_ERROR, self.codec.encode_error(exc), start, self.worker.id)
        task = self.worker.registry.get(job.fn_name)
        job.outcome = (RESULT, record, job.ttl_ms, self._unique(task))
        aborted = isinstance(exc, StreaqCancelled)
        self.worker.counters["aborted" if aborted else "failed"] += 1
        if aborted and not (task is not None and task.silent):
            self.log.add(logging.INFO, job, "task %s × %s aborted", job.fn_name, job.task_id)

    def hand_back(self, job: Job) -> None:
        """Decide that ``job`` goes back to the stream for another worker."""
        unique = self._unique(self.worker.registry.get(job.fn_name))
        job.outcome = (HAND_BACK, encode_fields(job.flat_fields()), 0, unique)
        self.worker.counters["relinquished"] += 1

    async def run(self, job: Job) -> None:
        """Execute ``job`` and set its outcome (a repeating task's result also re-places it)."""
        await self._run(job)
        self.repeat(job)

    def repeat(self, job: Job) -> None:
        """Turn the result of a crontab-scheduled task into a result plus its next run.

        The task keeps its id; its tries and last error start afresh. An aborted task, or one whose
        function this worker does not know, is not repeated.
        """
        tab = job.fields.get(F_CRONTAB)
        outcome = job.outcome
        if not tab or outcome is None or outcome[0] != RESULT or job.aborted:
            return
        task = self.worker.registry.get(job.fn_name)
        if task is None:
            return
        now = now_ms()
        run_at = CronSchedule(tab.decode(), self.worker.tz).next_fire_ms(now)
        fields = {k: v for k, v in job.fields.items() if k not in (F_TRIES, F_LAST_ERROR)}
        if task.expire is not None:
            fields[F_EXPIRE] = str(run_at + (to_ms(task.expire) or 0)).encode()
        flat = self._signed(fields)
        _, record, ttl, unique = outcome
        job.outcome = (REPEAT, record, encode_fields([ttl, run_at, flat]), unique)

    async def _run(self, job: Job) -> None:
        state = self.state
        if state.stopping or state.is_paused(job.fn_name):
            # paused, it goes back to its stream -- to its gate, where it waits for the resume
            self.hand_back(job)
            return
        task = self.worker.registry.get(job.fn_name)
        if job.aborted:
            self.fail(job, StreaqCancelled("task aborted"))
            return
        try:
            self.codec.verify_task(job.task_id, job.fields)
        except SignatureError as e:
            await dead_letter(state, job, task, undecodable(e))
            return
        # poison (unknown function, too many deliveries, undecodable payload): a dead letter
        poison = find_poison(state, job, task)
        if poison is not None or task is None:
            if poison is not None:
                await dead_letter(state, job, task, poison)
            return
        try:
            args, kwargs = self.codec.decode_call(
                job.task_id, bytes(job.fields.get(F_PAYLOAD, b""))
            )
        except (ArgumentError, SignatureError, DecryptionError) as e:
            await dead_letter(state, job, task, undecodable(e))
            return
        deadline = job.fields.get(F_EXPIRE)
        if deadline is not None and now_ms() > int(deadline):
            self.fail(job, StreaqError(f"task {job.task_id} expired before it started"))
            return
        late = self._too_late(job, task)
        if late is not None:
            self.log.add(
                logging.WARNING,
                job,
                "cron job %s × %s skipped: %s",
                task.fn_name,
                job.task_id,
                late,
            )
            self.fail(job, StreaqError(f"cron job {task.fn_name} skipped: {late}"))
            return
        if task.unique and not await self._lock(job, task):
            self.fail(
                job,
                StreaqError(
                    f"task {task.fn_name} is unique and another instance of it is running; "
                    f"task {job.task_id} did not run"
                ),
            )
            return
        try:
            self._arguments(job, task, args, kwargs)
        # arguments of the wrong type, and a parent's value (a group's outcome too) that
        # cannot be verified, decrypted or decoded
        except StreaqError as e:
            if not task.silent:
                self.log.add(
                    logging.ERROR, job, "task %s × %s failed: %s", task.fn_name, job.task_id, e
                )
            self.fail(job, e)
            return
        await self._execute(job, task, args, kwargs)

    def _too_late(self, job: Job, task: AnyRegisteredTask) -> str | None:
        """Why a cron firing starting now is past its ``max_schedule_drift``, or ``None``."""
        drift = to_ms(task.max_schedule_drift)
        if drift is None or not task.crontab:
            return None
        fire_ms = firing_time_ms(job.task_id, task.fn_name)
        late = None if fire_ms is None else now_ms() - fire_ms
        if late is None or late <= drift:
            return None
        return (
            f"its {fire_ms} occurrence would start {late / 1000:.1f}s late, "
            f"beyond max_schedule_drift ({drift / 1000:.1f}s)"
        )

    async def _lock(self, job: Job, task: AnyRegisteredTask) -> bool:
        """Take the unique lock of ``task`` for ``job`` (held at most its timeout plus a lease)."""
        lease = (to_ms(task.timeout) or 0) + self.idle_ms
        functions = self.state.client.functions
        return await retrying(
            self.state,
            f"cannot lock unique task {job.task_id}",
            lambda: functions.unique(task.fn_name, job.task_id, lease, self.idle_ms),
        )

    def _arguments(
        self, job: Job, task: AnyRegisteredTask, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Put a `then` link's input first and convert everything to the parameters' types."""
        kind = job.fields.get(F_PARENT_KIND)
        typed = 0
        if kind is not None:
            parent = job.fields.get(F_PARENT_ID, b"").decode()
            payload = bytes(job.fields[F_PARENT_VALUE])
            if int(kind) in (KIND_VALUES, KIND_RESULTS):
                # a group's members, decoded into their own tasks' return types
                members = group_results(parent, payload, self.worker.registry, self.codec)
                if int(kind) == KIND_RESULTS:
                    args.insert(0, members)
                    typed = 1
                else:
                    args.insert(0, [member.result for member in members])
            else:
                value = self.codec.decode_value(parent, int(kind), payload)
                args[:0] = (
                    value
                    if int(kind) == KIND_TUPLE and isinstance(value, list | tuple)
                    else [value]
                )
        task.spec.convert(args, kwargs, typed)

    async def _execute(
        self, job: Job, task: AnyRegisteredTask, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        call = self._call_for(task)
        if task.flow is not None and task.flow.rate_limited:
            # the last step before the call: what the window counts is (nearly) the start
            wait = await self._start_window(job)
            if wait:
                self.log.add(
                    logging.DEBUG,
                    job,
                    "task %s %s waits %d ms for its rate limit",
                    task.fn_name,
                    job.task_id,
                    wait,
                )
                self._defer(job, task, wait)
                return
        if not task.silent and self.log.info:
            parts: tuple[Any, ...] = (task.fn_name, job.task_id, self.worker.id)
            self.log.append((time.time(), logging.INFO, _STARTED, parts, job, None))
        trace = job.fields.get(F_TRACE)
        context = task.build_context(
            job.task_id,
            job.tries,
            msgspec.json.decode(trace, type=dict[str, str]) if trace else None,
            ProgressReporter(self.state, job),
        )
        token = _current_context.set(context)
        self.state.start(job)
        start = job.start_ms
        timeout = to_seconds(task.timeout)
        value: Any = None
        error: BaseException | None = None
        with anyio.CancelScope() as scope:
            job.scope = scope
            try:
                if timeout is None:
                    value = await call(*args, **kwargs)
                else:
                    with anyio.move_on_after(timeout) as limit:
                        value = await call(*args, **kwargs)
                    if limit.cancelled_caught:
                        error = TimeoutError(
                            f"task {task.fn_name} {job.task_id} timed out: still running after "
                            f"{timeout:g} s, its timeout"
                        )
            except Exception as e:
                error = e
        job.scope = None
        _current_context.reset(token)
        if job.lost:
            # taken over by another worker, whose outcome counts: nothing to record here
            return
        if scope.cancelled_caught:
            if job.aborted:
                error = StreaqCancelled("task aborted")
            else:
                self.hand_back(job)
                return
        if isinstance(error, StreaqRateLimited):
            await self._backed_off(job, task, error)
            return
        if error is not None:
            self._failed(job, task, error, start)
            return
        try:
            kind, payload = self.codec.encode_value(value)
        except Exception as e:
            error = StreaqError(
                f"the return value of task {task.fn_name} cannot be serialized: {e}"
            )
            self._failed(job, task, error, start)
            return
        record = job.record(kind, payload, start, self.worker.id)
        job.outcome = (RESULT, record, job.ttl_ms, self._unique(task))
        self.worker.counters["completed"] += 1
        if not task.silent and self.log.info:
            # logged for every task, so built the cheap way: _Took's text from the line's own
            # time, _Short only for a value whose repr may be long
            created = time.time()
            took = int(created * 1000) - start
            shown = value if type(value) in _PLAIN else _Short(value)
            parts = (task.fn_name, job.task_id, shown, took if took < 1000 else took / 1000)
            self.log.append((created, logging.INFO, _DONE[took >= 1000], parts, job, None))

    async def _start_window(self, job: Job) -> int:
        """0 when the rate limit lets the task start now, else the ms it must wait."""
        functions = self.state.client.functions
        return await retrying(
            self.state,
            f"cannot check the rate limit of task {job.task_id}",
            lambda: functions.start_gated(job.task_id),
        )

    def _defer(self, job: Job, task: AnyRegisteredTask, ms: int) -> None:
        """Run the task again in ``ms``, unchanged: without counting a try."""
        flat = encode_fields(job.flat_fields())
        job.outcome = (RETRY, flat, now_ms() + ms, self._unique(task))

    async def _backed_off(
        self, job: Job, task: AnyRegisteredTask, error: StreaqRateLimited
    ) -> None:
        """The task met an external limit: it and its gate wait ``error.delay``, no try counted."""
        ms = max(1, to_ms(error.delay) or 0)
        if task.flow is not None:
            functions = self.state.client.functions
            await retrying(
                self.state,
                f"cannot back off task {job.task_id}",
                lambda: functions.block_gate(job.task_id, ms, now_ms()),
            )
        if not task.silent:
            self.log.add(
                logging.INFO,
                job,
                "task %s ↻ %s rate limited: again in %s ms",
                task.fn_name,
                job.task_id,
                ms,
            )
        self._defer(job, task, ms)
        self.worker.counters["retried"] += 1

    def _failed(self, job: Job, task: AnyRegisteredTask, error: BaseException, start: int) -> None:
        retry = isinstance(error, StreaqRetry) or (
            isinstance(error, TimeoutError) and task.retry_timeouts
        )
        if retry and (not task.max_tries or job.tries < task.max_tries):
            run_at = self._retry_at(job, error)
            fields = dict(job.fields)
            fields[F_TRIES] = str(job.tries).encode()
            fields[F_LAST_ERROR] = self.codec.encode_last_error(job.task_id, error)
            job.outcome = (RETRY, encode_fields(self._signed(fields)), run_at, self._unique(task))
            self.worker.counters["retried"] += 1
            if not task.silent:
                self.log.add(
                    logging.INFO,
                    job,
                    "task %s ↻ %s retrying (try %d, after %s): %s",
                    task.fn_name,
                    job.task_id,
                    job.tries,
                    _Took(start),
                    error,
                )
            return
        if not isinstance(error, StreaqCancelled) and not task.silent:
            # a traceback tells something only about an error the task's own code raised; the
            # errors streaq makes itself (its timeout included) were never raised, so have none
            quiet = isinstance(error, StreaqError) or error.__traceback__ is None
            self.log.add(
                logging.ERROR,
                job,
                "task %s × %s failed after %s: %r",
                task.fn_name,
                job.task_id,
                _Took(start),
                error,
                exc=None if quiet else error,
            )
        self.fail(job, error, start)

    def _signed(self, fields: dict[str, bytes]) -> list[bytes | str]:
        """The fields, signed afresh when signing is on (a retry or repeat changed them), as
        the flat list XADD takes."""
        signature = self.codec.sign_task(fields)
        if signature is not None:
            fields[F_SIGNATURE] = signature
        flat: list[bytes | str] = []
        for key, val in fields.items():
            flat += [key, val]
        return flat

    def _retry_at(self, job: Job, error: BaseException) -> int:
        if isinstance(error, StreaqRetry):
            if error.schedule is not None:
                return int(error.schedule.timestamp() * 1000)
            if error.delay is not None:
                return now_ms() + (to_ms(error.delay) or 0)
        return now_ms() + job.tries**2 * 1000


#: the lines of a task's start and of its result, with a duration in ms or in s (see _Took)
_STARTED = "task %s □ %s → worker %s"
_DONE = ("task %s ■ %s ← %r (%d ms)", "task %s ■ %s ← %r (%.1f s)")
#: types whose repr is always short: a result line shows them as they are
_PLAIN = frozenset({type(None), bool, float})


class _Short:
    """A value for a log line, its repr shortened (formatted only if the line is emitted)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) <= 80 else text[:77] + "..."


class _Took:
    """The time from ``start`` (ms since the epoch) to now for a log line, e.g. ``12 ms``,
    ``3.4 s`` (measured now, formatted only if the line is written)."""

    __slots__ = ("ms",)

    def __init__(self, start: int) -> None:
        self.ms = now_ms() - start

    def __str__(self) -> str:
        ms = self.ms
        return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


class _ThreadRun:
    """Who gives back the limiter slot of one sync call: the thread once it ran, else the task."""

    __slots__ = ("abandoned", "lock", "ran")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran = False
        self.abandoned = False


def _in_thread(
    fn: Callable[..., Any], limiter: anyio.CapacityLimiter, threads: anyio.CapacityLimiter
) -> Call:
    """An async call of the sync ``fn`` in a worker thread holding a slot of ``limiter``.

    A cancelled call (timeout, abort, shutdown) abandons its thread, which cannot be stopped; the
    slot is given back by the thread when ``fn`` returns, not by the cancelled task, so abandoned
    threads still count against ``sync_concurrency``.
    """

    async def call(*args: Any, **kwargs: Any) -> Any:
        holder = object()
        await limiter.acquire_on_behalf_of(holder)
        run = _ThreadRun()

        def release() -> None:
            limiter.release_on_behalf_of(holder)

        def body() -> Any:
            with run.lock:
                if run.abandoned:
                    return None
                run.ran = True
            try:
                return fn(*args, **kwargs)
            finally:
                # an exception here means the event loop ended meanwhile: nothing is left to limit
                with contextlib.suppress(Exception):
                    anyio.from_thread.run_sync(release)

        try:
            return await anyio.to_thread.run_sync(body, limiter=threads, abandon_on_cancel=True)
        except BaseException:
            with run.lock:
                if not run.ran:
                    run.abandoned = True
                    release()
            raise

    return call
