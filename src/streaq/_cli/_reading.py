"""The read-only commands: ``info``, ``check``, ``dlq list`` and ``functions list``.

They never enter the worker (``async with worker:`` prepares the queue: it creates the streams,
their consumer group and the flow configuration) and send only reads, on a connection of their
own (``Worker._open_redis``), so pointing them at a production queue -- or at a queue name with
a typo -- leaves Redis exactly as it was: no key is created. A read-only server function may load
streaq's function library, which is server code, not data.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .._dlq import read_dead_letters
from .._inspect import NO_WORKER_ALIVE, read_beats, render_snapshot
from .._library import LIBRARY, installed_libraries
from .._redis import RedisClient
from .._words import plural
from ..utils import to_ms
from ._errors import import_worker, reaching

__all__ = ["check", "dlq_list", "functions_list", "info", "read"]

T = TypeVar("T")


def read(worker: Any, doing: str, reader: Callable[[RedisClient], Awaitable[T]]) -> T:
    """Run ``reader`` on a client of the worker's own, on the worker's backend.

    :param worker: the worker whose Redis to read
    :param doing: what the reading is, for the error line (``cannot read queue 'default'``)
    :param reader: the reading, given the connected client
    :raises CliError: when Redis cannot be reached or refuses
    """

    async def main() -> T:
        async with worker._open_redis() as redis:
            return await reader(redis)

    with reaching(worker, doing):
        return anyio.run(main, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs)


def info(worker_path: str, *, as_json: bool) -> int:
    """``streaq info``: print a snapshot of the queue of the worker at ``worker_path``."""
    worker = import_worker(worker_path)
    with reaching(worker, f"cannot read queue {worker.queue_name!r}"):
        found = anyio.run(
            worker.inspect, backend=worker.anyio_backend, backend_options=worker.anyio_kwargs
        )
    if as_json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(render_snapshot(found, worker.tz))
    return 0


def check(worker_path: str) -> int:
    """``streaq check``: exit status 0 when a worker of the queue is alive, else 1.

    A health probe for containers: one line on stdout either way, e.g. ``ok: 2 workers of queue
    default alive, last beat 3.1 s ago`` or ``no worker of this queue is alive: ...``. Redis
    unreachable is an error line on stderr and status 1 too.
    """
    worker = import_worker(worker_path)
    idle_ms = to_ms(worker.idle_timeout) or 60_000
    name = worker.queue_name
    _, beats = read(
        worker,
        f"cannot read queue {name!r}",
        lambda redis: read_beats(redis, worker.keys, idle_timeout_ms=idle_ms),
    )
    alive = [beat for beat in beats if beat.alive]
    if alive:
        last = min(beat.age_ms for beat in alive) / 1000
        workers = plural(len(alive), "worker")
        print(f"ok: {workers} of queue {name} alive, last beat {last:.1f} s ago")
        return 0
    seen = f"last beat {beats[0].age_ms / 1000:.1f} s ago" if beats else "none seen"
    print(f"queue {name}: {NO_WORKER_ALIVE} ({seen})")
    return 1


def dlq_list(worker: Any, ids: list[str] | None, limit: int | None, *, as_json: bool) -> int:
    """``streaq dlq list``: the dead letters, oldest first (only ``ids`` when given)."""
    letters = read(
        worker,
        f"cannot read queue {worker.queue_name!r}",
        lambda redis: read_dead_letters(redis, worker.keys, None if ids else limit),
    )
    wanted = set(ids or [])
    found = [d for d in letters if not wanted or d.task_id in wanted]
    found = found if limit is None else found[:limit]
    if as_json:
        print(json.dumps([d.to_json() for d in found], indent=2))
        return 0
    print(plural(len(found), "dead letter"))
    for d in found:
        when = d.time.astimezone(worker.tz).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{when}  {d.task_id}  {d.fn_name}  tries={d.tries}  {d.reason}")
    return 0


def functions_list(worker: Any) -> int:
    """``streaq functions list``: the libraries on each server (``*`` marks this version's)."""
    found = read(
        worker, f"cannot reach the Redis of queue {worker.queue_name!r}", installed_libraries
    )
    for server, names in found.items():
        print(f"{server}:")
        print_libraries(names)
    return 0


def print_libraries(names: list[str]) -> None:
    """One line per library name, indented; ``*`` marks this version's."""
    for name in names:
        print(f"  {'*' if name == LIBRARY.name else ' '} {name}")
