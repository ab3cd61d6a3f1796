"""The client side of a queue: enqueue, query, wait for and abort tasks.

A :class:`QueueClient` exists while a worker's ``async with`` (or its run) holds a connection;
producers that never run tasks use it alone. Every state change is one call of the server-side
library (``_library.py``); reads are one call or one command.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec
from redis import exceptions as rex

from ._codec import (
    KIND_ERROR,
    KIND_RESULTS,
    KIND_TUPLE,
    KIND_VALUES,
    Codec,
    decode_record,
    encode,
    lua_bytes,
)
from ._cron import CronSchedule
from ._events import decode_progress
from ._keys import QueueKeys
from ._library import QueueFunctions
from ._redis import RedisClient
from ._results import ResultWaiter
from ._schema import (
    DEDUP_DEBOUNCE,
    DEDUP_MODES,
    DEDUPED,
    DEFAULT_TTL_MS,
    F_CREATED,
    F_CRONTAB,
    F_EXPIRE,
    F_FN,
    F_GROUP,
    F_ID,
    F_LINK,
    F_PAYLOAD,
    F_TRACE,
    F_TRIES,
    F_TTL,
    LINK_GROUP,
    LINK_OTHERWISE,
)
from ._signing import F_SIGNATURE
from .task import GeneratedId, RegisteredTask, Task, TaskInfo, TaskResult, TaskStatus
from .types import Dedup, DedupOutcome, StreaqCancelled, StreaqError
from .utils import now_ms, to_ms, to_seconds

if TYPE_CHECKING:
    from .task import AnyRegisteredTask

ENQUEUE_CHUNK = 500
# where a task's id comes from (the enqueue server function's ID_*)
ID_GIVEN, ID_FIRING, ID_FRESH = 0, 1, 2


def ttl_ms(ttl: timedelta | int | None) -> int:
    """A task's result retention for the server: -1 keeps forever, 0 publishes only."""
    ms = to_ms(ttl)
    return -1 if ms is None else ms


_group_decoder = msgspec.msgpack.Decoder(tuple[str | None, list[tuple[str, msgspec.Raw]]])


def group_results(
    group_id: str, payload: bytes, registry: Mapping[str, RegisteredTask], codec: Codec
) -> list[TaskResult[Any]]:
    """The results of a group's members, in member order, from the payload of its outcome.

    :raises StreaqError: when the payload is not a group's outcome
    """
    try:
        _failed, members = _group_decoder.decode(payload)
    except msgspec.DecodeError as e:
        raise StreaqError(f"cannot decode the outcome of group {group_id}: {e}") from None
    return [build_result(member, bytes(raw), None, codec, registry) for member, raw in members]


def build_result(
    task_id: str,
    record: bytes,
    task: RegisteredTask | None,
    codec: Codec,
    registry: Mapping[str, RegisteredTask] | None = None,
) -> Any:
    """Turn a result record into a :class:`~streaq.task.TaskResult`.

    :param task: the task whose return type the value is decoded into; when ``None``, the task
        of the record's function name in ``registry``, if any
    """
    rec = decode_record(record)
    payload = bytes(rec.payload)
    if task is None and registry is not None:
        task = registry.get(rec.fn_name)
    value: Any
    if rec.kind == KIND_ERROR:
        value = codec.decode_error(task_id, payload)
    elif rec.kind in (KIND_VALUES, KIND_RESULTS):
        members = group_results(task_id, payload, registry or {}, codec)
        value = members if rec.kind == KIND_RESULTS else [member.result for member in members]
    else:
        spec = getattr(task, "spec", None)
        tp = spec.return_type if spec is not None else Any
        try:
            value = codec.decode_value(task_id, rec.kind, payload, tp)
        except msgspec.ValidationError:
            # a return annotation that does not describe the value still yields the value
            value = codec.decode_value(task_id, rec.kind, payload)
        if rec.kind == KIND_TUPLE and isinstance(value, list):
            value = tuple(value)
    return TaskResult(
        task_id=task_id,
        fn_name=rec.fn_name,
        created_time=rec.created,
        enqueue_time=rec.enqueued,
        success=rec.kind != KIND_ERROR,
        start_time=rec.start,
        finish_time=rec.finish,
        tries=rec.tries,
        worker_id=rec.worker_id,
        _result=value,
    )


_OUTCOME_OF = {code: DedupOutcome(name) for name, code in DEDUPED.items()}


def _deduped(task: Task[Any, Any], code: int, other: str) -> None:
    """Tell a task with a dedup key what the server made of it."""
    outcome = _OUTCOME_OF[code]
    task.dedup_outcome = outcome
    task.dedup_other = other or None
    if outcome is DedupOutcome.DROPPED:
        # the handle becomes one of the task that holds the key: its result is the one to await
        task.id = other


def _chunks(ordered: Sequence[Task[Any, Any]]) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the enqueue calls of ``ordered``: about ``ENQUEUE_CHUNK`` tasks each,
    but a group always travels with its members and the tasks linked to it, so that none of
    them ends before what waits for it is there (a result that is not stored would be lost)."""
    position = {task.id: n for n, task in enumerate(ordered)}
    reach = list(range(len(ordered)))  # the last task that must share a call with task n
    for n, task in enumerate(ordered):
        waited = [*(task._group or ())]
        if task._after is not None and task._after._group is not None:
            waited.append(task._after)
        for parent in waited:
            at = position.get(parent.id)
            if at is not None:
                reach[at] = max(reach[at], n)
    start, needed = 0, 0
    for n in range(len(ordered)):
        needed = max(needed, reach[n])
        if n == needed and n + 1 - start >= ENQUEUE_CHUNK:
            yield start, n + 1
            start = n + 1
    if start < len(ordered):
        yield start, len(ordered)


class QueueClient:
    """Producer-side operations of one queue.

    :param client: connected Redis client
    :param keys: the queue's keys
    :param codec: the queue's payload codec
    :param priorities: priority names, lowest first
    :param registry: the worker's registered tasks by name
    :param tg: task group owning background helpers (the result listener)
    :param events_maxlen: the bound of the queue's event stream (0: no events are written)
    """

    def __init__(
        self,
        client: RedisClient,
        keys: QueueKeys,
        codec: Codec,
        priorities: Sequence[str],
        registry: dict[str, AnyRegisteredTask],
        tg: anyio.abc.TaskGroup,
        events_maxlen: int = 0,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.codec = codec
        self.functions = QueueFunctions(client, keys.prefix, events_maxlen)
        self.priorities = list(priorities)
        self.registry = registry
        self._tg = tg
        self._results = ResultWaiter(client, keys)

    async def prepare(self) -> None:
        """Create the queue's streams and consumer group, and write the flow limits of the
        registered tasks (idempotent)."""
        flows = [
            (name, task.flow.config() if task.flow is not None else b"")
            for name, task in self.registry.items()
        ]
        await self.functions.prepare(now_ms(), self.priorities, flows)

    def _blob(self, task: Task[Any, Any], now: int, tz: Any, trace: bytes) -> bytes:
        parent = task.parent
        fn_name = parent.fn_name
        spec = getattr(parent, "spec", None)
        if spec is not None and task._after is None:
            spec.check(task.args, task.kwargs)
        # a generated id is a str subclass, which msgspec does not encode
        task_id = str(task.id)
        try:
            payload = self.codec.arguments(task_id, task.args, task.kwargs)
        except Exception as e:  # the user's serializer may raise anything
            raise StreaqError(f"cannot serialize the arguments of task {fn_name}: {e}") from e
        run_at = 0
        crontab = ""
        if task.delay is not None:
            run_at = now + (to_ms(task.delay) or 0)
        elif isinstance(task.schedule, datetime):
            when = task.schedule if task.schedule.tzinfo else task.schedule.replace(tzinfo=tz)
            run_at = math.floor(when.timestamp() * 1000)
        elif isinstance(task.schedule, str):
            crontab = task.schedule
            run_at = CronSchedule(crontab, tz).next_fire_ms(now)
        fields: list[Any] = [F_ID, task_id, F_FN, fn_name, F_PAYLOAD, lua_bytes(payload)]
        fields += [F_CREATED, now]
        ttl = ttl_ms(parent.ttl) if parent.ttl is not None or spec else DEFAULT_TTL_MS
        fields += [F_TTL, ttl]
        deps = [str(dep) for dep in task.after]
        dedup = None if task.dedup_key is None else self._dedup_spec(task, deps, crontab)
        if parent.expire is not None:
            start = max(run_at, now)
            if dedup is not None and dedup[1] == DEDUP_DEBOUNCE:
                # a debounced task starts a window later: its time to expire counts from then
                start = max(start, now + dedup[2])
            fields += [F_EXPIRE, start + (to_ms(parent.expire) or 0)]
        if task._after is not None:
            deps.append(str(task._after.id))
            fields += [F_LINK, LINK_OTHERWISE if task._fails_over else task._link_kind]
        if task._group is not None:
            deps += [str(member.id) for member in task._group]
            fields += [F_LINK, LINK_GROUP]
        if crontab:
            fields += [F_CRONTAB, crontab]
        if trace:
            fields += [F_TRACE, lua_bytes(trace)]
        group = (
            None if parent.flow is None else parent.flow.group_key(fn_name, task.args, task.kwargs)
        )
        if group is not None:
            fields += [F_GROUP, group]
        if self.codec.signs:
            signed = dict(zip(fields[::2], fields[1::2], strict=True))
            signed.update({F_PAYLOAD: payload, F_TRACE: trace or None})
            fields += [F_SIGNATURE, lua_bytes(self.codec.sign_task(signed) or b"")]
        priority = task.priority or self.priorities[0]
        if type(task.id) is GeneratedId:
            origin = ID_FRESH
        else:
            origin = ID_FIRING if task_id.startswith("cron:") else ID_GIVEN
        blob: list[Any] = [task_id, priority, run_at, deps, origin, fields]
        if dedup is not None:
            blob.append(dedup)
        # every other leaf is a str or an int: one msgspec call encodes the whole blob
        return encode(blob)

    @staticmethod
    def _dedup_spec(task: Task[Any, Any], deps: list[str], crontab: str) -> list[Any]:
        """The ``[key, mode, window ms]`` of a task with a dedup key, for the server."""
        dedup = task.dedup
        if dedup is None:
            raise StreaqError(f"task {task.id} has a dedup key but no dedup mode")
        if not isinstance(dedup, Dedup):
            dedup = Dedup.throttle(dedup)
        # a dropped or superseded task would leave the tasks linked to it without their parent
        if deps or task._after is not None or task._triggers is not None or crontab:
            raise StreaqError(
                f"task {task.id}: a task with a dedup key cannot be part of a pipeline, depend "
                "on other tasks, or repeat on a crontab"
            )
        return [task.dedup_key, DEDUP_MODES[dedup.mode.value], to_ms(dedup.window) or 0]

    async def enqueue_many(
        self,
        tasks: Iterable[Task[Any, Any]],
        tz: Any,
        trace_carrier: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        """Enqueue tasks (and the links of their chains) in as few calls as possible.

        :param trace_carrier: gives the current trace context, stored with each task

        :raises StreaqError: for an unknown dependency, a bad priority, unserializable arguments,
            or an id that a task not finished yet holds (ids are unique among live tasks; a
            finished task's id may be used again, which deletes its old result)
        """
        ordered: list[Task[Any, Any]] = []
        seen: dict[str, Task[Any, Any]] = {}
        for task in tasks:
            for link in task.chain():
                known = seen.get(link.id)
                if known is None:
                    seen[link.id] = link
                    ordered.append(link)
                elif known is not link:
                    raise StreaqError(f"task id {link.id} is given to two tasks of one enqueue")
        now = now_ms()
        headers = trace_carrier() if trace_carrier is not None else None
        trace = msgspec.json.encode(headers) if headers else b""
        blobs = [self._blob(task, now, tz, trace) for task in ordered]
        for start, end in _chunks(ordered):
            try:
                answers = await self.functions.enqueue(now, blobs[start:end])
            except rex.ResponseError as e:
                if "STREAQ" in str(e):
                    raise StreaqError(str(e).split("STREAQ ", 1)[-1]) from None
                raise
            for task, answer in zip(ordered[start:end], answers, strict=True):
                if isinstance(answer, list):
                    _deduped(task, int(answer[0]), bytes(answer[1]).decode())
        for task in ordered:
            task._enqueued = True

    async def status(self, task_id: str) -> TaskStatus:
        """Current status of a task."""
        return TaskStatus(await self.functions.status(task_id))

    async def result(
        self,
        task_id: str,
        timeout: timedelta | int | float | None,
        task: RegisteredTask | None = None,
    ) -> TaskResult[Any]:
        """Wait for a task's result.

        :raises TimeoutError: when no result arrives within ``timeout``
        """
        record = await self._results.wait(task_id, to_seconds(timeout), self._tg)
        if task is None:
            fn_name = decode_record(record).fn_name
            task = self.registry.get(fn_name)
        result: TaskResult[Any] = build_result(task_id, record, task, self.codec, self.registry)
        return result

    async def abort(self, task_id: str, timeout: timedelta | int | float) -> bool:
        """Abort a task; wait up to ``timeout`` for a running one to confirm."""
        # listening before the abort is sent: the cancelled result of a task with ttl=0 is only
        # published, when the worker has cancelled it
        async with self._results.watch(task_id, self._tg) as watch:
            outcome = await self.functions.abort(task_id, now_ms())
            if outcome == 1:
                return True
            if outcome != 2:
                return False
            try:
                record = await watch.result(to_seconds(timeout))
            except TimeoutError:
                return False
        res = build_result(task_id, record, None, self.codec)
        return not res.success and isinstance(res._result, StreaqCancelled)

    async def unschedule(self, task_id: str) -> bool:
        """Stop a scheduled task (delayed, waiting, or repeating on a crontab, even mid-run).

        It ends with a ``StreaqCancelled`` result and never runs again.

        :return: ``True`` when the task was scheduled, ``False`` otherwise
        """
        return await self.functions.unschedule(task_id, now_ms())

    async def info(self, task_id: str) -> TaskInfo | None:
        """Facts about an unfinished task, or ``None``."""
        raw = await self.functions.info(task_id)
        return None if raw is None else self.info_from_reply(task_id, raw)

    def info_from_reply(self, task_id: str, raw: list[Any]) -> TaskInfo:
        """A :class:`TaskInfo` from the reply of the ``info`` server function."""
        state, _prio, flat, run_at, deps, dependents, deliveries, progress = raw
        fields = {bytes(flat[n]).decode(): flat[n + 1] for n in range(0, len(flat), 2)}
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        try:
            decoded_args, kwargs = self.codec.decode_call(task_id, bytes(fields[F_PAYLOAD]))
            args = tuple(decoded_args)
        except StreaqError:
            pass
        due = int(run_at)
        return TaskInfo(
            task_id=task_id,
            fn_name=bytes(fields[F_FN]).decode(),
            created_time=int(fields[F_CREATED]),
            args=args,
            kwargs=kwargs,
            tries=int(fields.get(F_TRIES, 0)) + int(deliveries),
            scheduled=datetime.fromtimestamp(due / 1000, tz=UTC) if due > 0 else None,
            dependencies={bytes(d).decode() for d in deps},
            dependents={bytes(d).decode() for d in dependents},
            status=TaskStatus(bytes(state).decode()),
            crontab=bytes(fields[F_CRONTAB]).decode() if F_CRONTAB in fields else None,
            progress=decode_progress(self.codec, task_id, progress),
        )

    async def queue_size(self, include_scheduled: bool) -> int:
        """Tasks waiting in the streams or at a gate of flow control (and, optionally, delayed or
        waiting on dependencies)."""
        counts = await self.functions.counts(self.priorities)
        if include_scheduled:
            return int(counts[-2])
        return sum(int(c) for c in counts[: len(self.priorities)]) + int(counts[-1])
