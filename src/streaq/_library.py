"""The server-side library (``lua/streaq.lua``) and one typed Python method per function.

The library's name carries a hash of its source, so servers shared by several streaq versions hold
each version side by side, and a changed library is loaded afresh without any version bookkeeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from ._redis import FunctionLibrary, RedisClient

Arg = str | bytes | int | float


def _load() -> tuple[FunctionLibrary, str]:
    source = files("streaq").joinpath("lua/streaq.lua").read_text(encoding="utf-8")
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    name = f"streaq_{digest}"
    code = source.replace("__LIBRARY__", name).replace("__PREFIX__", f"{name}_")
    return FunctionLibrary(name=name, code=code), f"{name}_"


LIBRARY, _PREFIX = _load()


class QueueFunctions:
    """Calls of the library's functions for one queue (``KEYS[1]`` is the queue's prefix).

    :param client: the Redis client
    :param prefix: the queue's key prefix
    """

    __slots__ = ("_client", "_keys")

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._keys = (prefix,)

    async def call(self, name: str, args: Sequence[Arg]) -> Any:
        """Call the library function ``name`` with ``args``."""
        return await self._client.fcall(LIBRARY, _PREFIX + name, keys=self._keys, args=args)

    async def call_ro(self, name: str, args: Sequence[Arg]) -> Any:
        """Call the read-only library function ``name`` with ``args``."""
        return await self._client.fcall_ro(LIBRARY, _PREFIX + name, keys=self._keys, args=args)

    async def enqueue(self, now: int, tasks: Sequence[bytes]) -> list[int]:
        """Store tasks (msgpack blobs, see the Lua source); one status per task."""
        result: list[int] = await self.call("enqueue", [now, *tasks])
        return result

    async def finish(self, worker_id: str, now: int, items: Sequence[Arg]) -> tuple[int, int]:
        """Record results, retries, repeats and hand-backs (groups of 7 arguments per task).

        :return: (results written, finished tasks whose dependents were released or failed)
        """
        written, released = await self.call("finish", [worker_id, now, *items])
        return int(written), int(released)

    async def unique(self, fn: str, task_id: str, priority: str, msgid: str, fields: bytes) -> bool:
        """Take ``fn``'s unique lock for ``task_id``, or park the task until it is free."""
        return bool(await self.call("unique", [fn, task_id, priority, msgid, fields]))

    async def unschedule(self, task_id: str, now: int) -> bool:
        """Stop a delayed, waiting or crontab-repeating task; ``False`` if it was not scheduled."""
        return bool(await self.call("unschedule", [task_id, now]))

    async def abort(self, task_id: str, now: int) -> int:
        """0 finished already, -1 unknown, 1 aborted, 2 running (abort requested)."""
        result: int = await self.call("abort", [task_id, now])
        return result

    async def status(self, task_id: str) -> str:
        """The task's status as a :class:`~streaq.task.TaskStatus` value."""
        raw: bytes = await self.call_ro("status", [task_id])
        return raw.decode()

    async def info(self, task_id: str) -> list[Any] | None:
        """Raw facts about an unfinished task (see the Lua source)."""
        result: list[Any] | None = await self.call_ro("info", [task_id])
        return result

    async def promote(self, now: int, limit: int) -> tuple[int, int]:
        """Move due delayed tasks into their streams; returns (moved, next due ms or -1)."""
        moved, nxt = await self.call("promote", [now, limit])
        return int(moved), int(nxt)

    async def reclaim(
        self, worker_id: str, min_idle_ms: int, count: int, priorities: Sequence[str]
    ) -> list[list[Any]]:
        """Take over tasks idle longer than ``min_idle_ms``."""
        result: list[list[Any]] = await self.call(
            "reclaim", [worker_id, min_idle_ms, count, *priorities]
        )
        return result

    async def lease(self, worker_id: str, pairs: Sequence[str]) -> list[bytes]:
        """Refresh the lease of running messages; returns message ids no longer ours."""
        result: list[bytes] = await self.call("lease", [worker_id, *pairs])
        return result

    async def prepare(self, priorities: Sequence[str]) -> None:
        """Create the streams and their consumer group."""
        await self.call("prepare", list(priorities))

    async def counts(self, priorities: Sequence[str]) -> list[int]:
        """Queued per priority, then delayed, then all unfinished tasks."""
        result: list[int] = await self.call_ro("counts", list(priorities))
        return result

    async def dead_letter(
        self,
        worker_id: str,
        now: int,
        task_id: str,
        priority: str,
        msgid: str,
        record: bytes,
        ttl_ms: int,
        unique_fn: str,
        reason: str,
        tries: int,
    ) -> bool:
        """Move a claimed message to the dead-letter stream and write its failed ``record``.

        :return: ``False`` when the message is gone (finished elsewhere): nothing was written
        """
        args: list[Arg] = [worker_id, now, task_id, priority, msgid, record, ttl_ms]
        return bool(await self.call("dead_letter", [*args, unique_fn, reason, tries]))

    async def replay_dead_letters(self, now: int, task_ids: Sequence[str]) -> list[str]:
        """Queue dead-lettered tasks afresh (all when ``task_ids`` is empty); the ids replayed."""
        result: list[bytes] = await self.call("replay_dead_letters", [now, *task_ids])
        return [bytes(r).decode() for r in result]

    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete dead letters of ``task_ids`` (all when empty); the number deleted."""
        result: int = await self.call("purge_dead_letters", list(task_ids))
        return result
