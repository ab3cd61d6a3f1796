"""The start-up banner: one INFO record saying what a worker runs, where and how.

It is one record of several lines rather than several records, so that the lines of workers
starting together never interleave and a JSON log line holds the whole banner. The Redis URL is
shown with its password as ``***`` (:meth:`RedisPool.describe <streaq.RedisPool.describe>`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .._redis import parse_config
from .._words import plural

if TYPE_CHECKING:
    from ..worker import Worker

__all__ = ["banner", "current_backend"]


def current_backend() -> str:
    """The event loop running this call: ``asyncio``, ``asyncio+uvloop`` or ``trio``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # anyio runs on asyncio or trio, and asyncio has no loop running here
        return "trio"
    if type(loop).__module__.partition(".")[0] == "uvloop":
        return "asyncio+uvloop"
    return "asyncio"


def banner(worker: Worker[Any]) -> str:
    """The banner of ``worker``, to be logged once it runs (call it on the worker's loop).

    :param worker: the running worker
    :return: a first line naming the worker, then one indented line per setting
    """
    pool = worker.redis_pool
    db = parse_config(pool.url, **pool.options).db
    crons = sorted((t for t in worker.registry.values() if t.crontab), key=_name)
    tasks = sorted(name for name, t in worker.registry.items() if not t.crontab)
    rows = [
        ("redis", f"{pool.describe()} (db {db})"),
        ("backend", current_backend()),
        (
            "prefetch",
            f"{worker.prefetch}, {plural(worker.sync_concurrency, 'thread')} for sync tasks",
        ),
        # lowest first, as given; the reader serves the highest first
        ("priorities", " < ".join(worker.priorities)),
        ("tasks", ", ".join(tasks) or "-"),
        ("cron jobs", ", ".join(f"{t.fn_name} ({t.crontab})" for t in crons) or "-"),
    ]
    # the first line alone says the worker runs (and log watchers look for "started:")
    count = plural(len(worker.registry), "task")
    mode = ", until the queue is empty (burst)" if worker.burst else ""
    lines = [
        f"worker {worker.id} started: queue {worker.queue_name}, {count}, "
        f"concurrency {worker.concurrency}{mode}"
    ]
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


def _name(task: Any) -> str:
    return str(task.fn_name)
