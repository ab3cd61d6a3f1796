"""The commands that change a queue: ``enqueue``, ``purge``, ``pause``/``resume``, ``scale``,
``dlq replay|purge`` and ``functions prune``.

Each one enters the worker as a producer (``async with worker:``, which prepares the queue) on
the worker's ``anyio_backend``, and never runs tasks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio

from .._library import QueueFunctions, prune_libraries
from .._words import plural
from ..utils import now_ms
from ._errors import CliError, import_worker, reaching
from ._reading import print_libraries, read

__all__ = [
    "dlq_purge",
    "dlq_replay",
    "enqueue",
    "functions_prune",
    "pause",
    "purge",
    "scale",
]

T = TypeVar("T")

#: index entries examined per server call of a purge (each call is atomic and short)
PURGE_STEP = 500


def _as_producer(worker: Any, act: Callable[[], Awaitable[T]]) -> T:
    """Run ``act`` inside ``async with worker:`` on the worker's backend."""

    async def main() -> T:
        async with worker:
            return await act()

    with reaching(worker, f"cannot reach queue {worker.queue_name!r}"):
        return anyio.run(main, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)


def _task(worker: Any, worker_path: str, name: str) -> Any:
    task = worker.registry.get(name)
    if task is None:
        known = ", ".join(sorted(worker.registry)) or "none"
        raise CliError(f"no task named {name!r} in {worker_path} (its tasks: {known})")
    return task


def _json_option(option: str, text: str | None, kind: type[T]) -> T:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        what = "an array" if kind is list else "an object"
        raise CliError(f"{option} must be {what} in JSON, got {text!r}")
    return value


def enqueue(
    worker_path: str,
    name: str,
    *,
    args_json: str | None,
    kwargs_json: str | None,
    delay: float | None,
) -> int:
    """``streaq enqueue module:worker TASK [--args JSON] [--kwargs JSON] [--delay S]``.

    Prints the new task's id. The arguments are JSON values, converted to the task's parameter
    types as a producer's would be (a JSON string for a ``datetime`` parameter, say).
    """
    worker = import_worker(worker_path)
    task = _task(worker, worker_path, name)
    args = _json_option("--args", args_json, list)
    kwargs = _json_option("--kwargs", kwargs_json, dict)

    async def act() -> str:
        # arguments that do not fit the signature or the parameter types (ArgumentError is a
        # TypeError) fail here or when encoded, before anything is written
        try:
            handle = task.enqueue(*args, **kwargs)
            if delay is not None:
                handle = handle.start(delay=timedelta(seconds=delay))
            await handle
        except TypeError as exc:
            raise CliError(f"cannot enqueue {name}: {exc}") from exc
        return str(handle.id)

    print(_as_producer(worker, act))
    return 0


def purge(worker_path: str, *, yes: bool) -> int:
    """``streaq purge module:worker [--yes]``: end every task no worker holds.

    Queued (not claimed), delayed and waiting tasks end with a ``StreaqCancelled`` result ("task
    purged"), which wakes whoever waits for them; running and prefetched tasks go on. Unless
    ``yes``, it says how many tasks that is and asks first.
    """
    worker = import_worker(worker_path)
    name = worker.queue_name
    if not yes:
        with reaching(worker, f"cannot read queue {name!r}"):
            found = anyio.run(
                worker.inspect, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs
            )
        gated = sum(flow.waiting for flow in found.flows)
        parts = [f"{found.queued} queued", f"{found.delayed} delayed"]
        parts.append(f"{found.waiting + gated} waiting")
        total = found.queued + found.delayed + found.waiting + gated
        if total == 0:
            print(f"queue {name} has no task to purge")
            return 0
        question = f"purge {plural(total, 'task')} of queue {name} ({', '.join(parts)})? [y/N] "
        print(question, end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise CliError("nothing purged")

    async def act() -> int:
        functions: QueueFunctions = worker._client.functions
        cursor: bytes | str = "0"
        removed = 0
        while True:
            cursor, step = await functions.purge(now_ms(), cursor, PURGE_STEP)
            removed += step
            if cursor in (b"0", "0"):
                return removed

    removed = _as_producer(worker, act)
    print(f"purged {plural(removed, 'task')} of queue {name}")
    return 0


def pause(worker_path: str, task: str | None, *, paused: bool) -> int:
    """``streaq pause|resume module:worker [--task NAME]``: on every worker of the queue.

    Paused, tasks start no more (running ones go on) and new ones wait; resumed, they start as
    their limits allow (see the flow control documentation).
    """
    worker = import_worker(worker_path)
    if task is not None:
        _task(worker, worker_path, task)
    changed = _as_producer(worker, lambda: worker.pause(task) if paused else worker.resume(task))
    target = f"task {task}" if task else f"queue {worker.queue_name}"
    state = "paused" if paused else "resumed"
    print(f"{target} {state}" if changed else f"{target} was {state} already")
    return 0


def scale(worker_path: str, concurrency: int) -> int:
    """``streaq scale module:worker N``: every running worker of the queue runs N tasks at once
    (``Worker.scale``); workers started later keep their own concurrency."""
    worker = import_worker(worker_path)
    _as_producer(worker, lambda: worker.scale(concurrency))
    at_once = plural(concurrency, "task")
    print(f"the workers of queue {worker.queue_name} run {at_once} at once now")
    return 0


def dlq_replay(worker: Any, ids: list[str] | None, *, as_json: bool) -> int:
    """``streaq dlq replay``: queue dead letters again; an ``--id`` that is none is an error."""
    replayed: list[str] = _as_producer(worker, lambda: worker.replay_dead_letters(ids))
    if as_json:
        print(json.dumps({"replayed": replayed}))
    else:
        print(f"replayed {plural(len(replayed), 'task')}")
        for task_id in replayed:
            print(task_id)
    missing = [task_id for task_id in ids or [] if task_id not in replayed]
    if missing:
        raise CliError(f"no dead letter with id {', '.join(missing)} in queue {worker.queue_name}")
    return 0


def dlq_purge(worker: Any, ids: list[str] | None, *, as_json: bool) -> int:
    """``streaq dlq purge``: delete dead letters (those of ``ids``, else all)."""
    purged: int = _as_producer(worker, lambda: worker.purge_dead_letters(ids))
    print(json.dumps({"purged": purged}) if as_json else f"purged {plural(purged, 'dead letter')}")
    return 0


def functions_prune(worker: Any) -> int:
    """``streaq functions prune``: delete the libraries of other streaq versions.

    A worker or producer of an older version still running loads its library again on its next
    call, when its ACL user may run ``FUNCTION LOAD``: prune once every process runs the new
    version.
    """
    deleted = read(
        worker, f"cannot reach the Redis of queue {worker.queue_name!r}", prune_libraries
    )
    for server, names in deleted.items():
        print(f"{server}: deleted {plural(len(names), 'old library', 'old libraries')}")
        print_libraries(names)
    return 0
