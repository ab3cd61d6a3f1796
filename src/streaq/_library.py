"""The server-side library (``lua/*.lua``) and one typed Python method per function.

The library's name carries a hash of its source, so servers shared by several streaq versions hold
each version side by side, and a changed library is loaded afresh without any version bookkeeping.
Old versions stay loaded until :func:`prune_libraries` (``streaq functions prune``) deletes them;
a client that still uses a deleted version loads it again on its next call, if its ACL user may.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from ._redis import ClusterClient, FunctionLibrary, RedisClient

Arg = str | bytes | int | float


#: the files of the library, in the order they are joined: ``base.lua`` (the shebang, the key
#: layout, the shared vocabulary and helpers) first, then one file per group of functions
LIBRARY_PARTS = (
    "base.lua",
    "groups.lua",
    "flow.lua",
    "tasks.lua",
    "dedup.lua",
    "claims.lua",
    "dead_letters.lua",
    "events.lua",
)


def _load() -> tuple[FunctionLibrary, str]:
    folder = files("streaq").joinpath("lua")
    source = "\n".join(folder.joinpath(part).read_text(encoding="utf-8") for part in LIBRARY_PARTS)
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    name = f"streaq_{digest}"
    code = source.replace("__LIBRARY__", name).replace("__PREFIX__", f"{name}_")
    return FunctionLibrary(name=name, code=code), f"{name}_"


LIBRARY, _PREFIX = _load()

#: the names this module gives libraries (a user's own "streaq_..." library is left alone)
_NAME = re.compile(r"streaq_[0-9a-f]{10}")


def _servers(client: RedisClient) -> list[RedisClient]:
    """The servers holding function libraries: every master of a cluster, else the one."""
    if isinstance(client, ClusterClient):
        return [client.node(address) for address in client.masters]
    return [client]


async def _streaq_libraries(server: RedisClient) -> list[str]:
    reply = await server.execute("FUNCTION", "LIST", "LIBRARYNAME", "streaq_*")
    names = []
    for library in reply or []:
        fields = (
            library
            if isinstance(library, dict)
            else dict(zip(library[::2], library[1::2], strict=True))
        )
        names.append(bytes(fields[b"library_name"]).decode())
    return sorted(n for n in names if _NAME.fullmatch(n))


async def installed_libraries(client: RedisClient) -> dict[str, list[str]]:
    """The streaq libraries loaded on each server (``host:port`` -> names; the current one is
    :data:`LIBRARY` ``.name``)."""
    return {server.address: await _streaq_libraries(server) for server in _servers(client)}


async def prune_libraries(client: RedisClient) -> dict[str, list[str]]:
    """Delete every streaq library but this version's from every server.

    :return: ``host:port`` -> the names deleted there
    """
    deleted: dict[str, list[str]] = {}
    for server in _servers(client):
        old = [n for n in await _streaq_libraries(server) if n != LIBRARY.name]
        for name in old:
            await server.execute("FUNCTION", "DELETE", name)
        deleted[server.address] = old
    return deleted


class QueueFunctions:
    """Calls of the library's functions for one queue (``KEYS[1]`` is the queue's prefix).

    :param client: the Redis client
    :param prefix: the queue's key prefix
    :param events_maxlen: the bound of the queue's event stream that writing calls pass (0: they
        write no events)
    """

    __slots__ = ("_bound", "_client", "_keys")

    def __init__(self, client: RedisClient, prefix: str, events_maxlen: int = 0) -> None:
        self._client = client
        self._keys = (prefix,)
        self._bound = events_maxlen

    async def call(self, name: str, args: Sequence[Arg]) -> Any:
        """Call the writing library function ``name`` with ``args`` (after the events bound)."""
        return await self._client.fcall(
            LIBRARY, _PREFIX + name, keys=self._keys, args=[self._bound, *args]
        )

    async def call_ro(self, name: str, args: Sequence[Arg]) -> Any:
        """Call the read-only library function ``name`` with ``args``."""
        return await self._client.fcall_ro(LIBRARY, _PREFIX + name, keys=self._keys, args=args)

    async def enqueue(self, now: int, tasks: Sequence[bytes]) -> list[int | list[Any]]:
        """Store tasks (msgpack blobs, see the Lua source); one answer per task: a status, or
        ``[outcome, other id]`` for a task with a dedup key."""
        result: list[int | list[Any]] = await self.call("enqueue", [now, *tasks])
        return result

    async def finish(
        self, worker_id: str, now: int, started: Sequence[Arg], items: Sequence[Arg]
    ) -> tuple[int, int, int]:
        """Mark tasks started, then record results, retries, repeats and hand-backs.

        :param started: groups of 5 of the tasks whose function was called: priority, id,
            function name, tries and start time (ms)
        :param items: groups of 7 arguments per outcome (see the Lua source)
        :return: (results written, finished tasks whose dependents were released or failed,
            outcomes skipped because the worker no longer owns their message)
        """
        args: list[Arg] = [worker_id, now, len(started) // 5, *started, *items]
        written, released, skipped = await self.call("finish", args)
        return int(written), int(released), int(skipped)

    async def unique(self, fn: str, task_id: str, lease_ms: int, idle_ms: int) -> bool:
        """Take ``fn``'s unique lock for ``task_id`` for ``lease_ms``; ``False`` when another
        running instance holds it (one whose message was idle less than ``idle_ms``)."""
        return bool(await self.call("unique", [fn, task_id, lease_ms, idle_ms]))

    async def unschedule(self, task_id: str, now: int) -> bool:
        """Stop a delayed, waiting or crontab-repeating task; ``False`` if it was not scheduled."""
        return bool(await self.call("unschedule", [task_id, now]))

    async def abort(self, task_id: str, now: int) -> int:
        """0 finished already, -1 unknown, 1 aborted, 2 running (abort requested)."""
        result: int = await self.call("abort", [task_id, now])
        return result

    async def purge(self, now: int, cursor: bytes | str, count: int) -> tuple[bytes, int]:
        """One step of purging the tasks no worker holds (see the Lua source).

        :return: the next cursor (``b"0"`` when done) and the tasks removed in this step
        """
        cursor_next, removed = await self.call("purge", [now, cursor, count])
        return bytes(cursor_next), int(removed)

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
        self, worker_id: str, min_idle_ms: int, count: int, cursors: Sequence[tuple[str, str]]
    ) -> tuple[list[list[Any]], list[list[Any]], list[str]]:
        """Take over other workers' messages idle longer than ``min_idle_ms``.

        :param cursors: (priority, cursor) pairs, highest priority first; ``"-"`` starts a scan
        :return: (messages taken over, this worker's own idle messages, the next cursors), each
            message as [priority, msgid, fields, deliveries, abort requested]
        """
        args: list[Arg] = [worker_id, min_idle_ms, count]
        for priority, cursor in cursors:
            args += [priority, cursor]
        taken, own, nxt = await self.call("reclaim", args)
        return taken, own, [bytes(c).decode() for c in nxt]

    async def lease(self, worker_id: str, pairs: Sequence[str]) -> list[bytes]:
        """Refresh the lease of running messages; returns message ids no longer ours."""
        result: list[bytes] = await self.call("lease", [worker_id, *pairs])
        return result

    async def retire(self, worker_id: str, now: int, priorities: Sequence[str]) -> int:
        """Hand back whatever a stopping worker still holds; delete its consumers and heartbeat.

        :return: the number of messages handed back
        """
        result: int = await self.call("retire", [worker_id, now, *priorities])
        return result

    async def prune(
        self, now: int, dead_after_ms: int, forget_after_ms: int, priorities: Sequence[str]
    ) -> tuple[int, int]:
        """Delete the consumers of gone workers and forget old heartbeats.

        :return: (consumers deleted, heartbeats forgotten)
        """
        deleted, forgotten = await self.call(
            "prune", [now, dead_after_ms, forget_after_ms, *priorities]
        )
        return int(deleted), int(forgotten)

    async def prepare(
        self, now: int, priorities: Sequence[str], flows: Sequence[tuple[str, bytes]]
    ) -> None:
        """Create the streams and their consumer group; write the flow configurations.

        :param flows: (function, configuration) pairs, ``b""`` for a function without limits
        """
        args: list[Arg] = [now, len(priorities), *priorities]
        for fn_name, config in flows:
            args += [fn_name, config]
        await self.call("prepare", args)

    async def counts(self, priorities: Sequence[str]) -> list[int]:
        """Queued per priority, then delayed, all unfinished tasks and those waiting at gates."""
        result: list[int] = await self.call_ro("counts", list(priorities))
        return result

    async def pause(self, fn_name: str, now: int, paused: bool) -> bool:
        """Pause or resume a function (``*``: the queue); whether its state changed."""
        return bool(await self.call("pause", [fn_name, now, int(paused)]))

    async def scale(self, concurrency: int) -> None:
        """Set the concurrency of every running worker of the queue (see the Lua source)."""
        await self.call("scale", [concurrency, uuid.uuid4().hex])

    async def flow_info(self, groups: int) -> list[Any]:
        """Whether the queue is paused, then per limited function its configuration, tasks
        admitted and waiting, and the waiting of up to ``groups`` group keys (see the Lua)."""
        result: list[Any] = await self.call_ro("flow_info", [groups])
        return result

    async def start_gated(self, task_id: str) -> int:
        """Record the start of a rate-limited task: 0 when it may start, else the ms to wait.

        The windows of starts run on the server's clock, so hosts' clocks may differ."""
        result: int = await self.call("start_gated", [task_id])
        return result

    async def block_gate(self, task_id: str, ms: int, now: int) -> None:
        """Let the gate of a running task's function (or group) admit nothing for ``ms``."""
        await self.call("block_gate", [task_id, ms, now])

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

    async def replay_dead_letters(self, now: int, groups: Sequence[Arg]) -> list[str]:
        """Queue dead-lettered tasks afresh: groups of entry id, task id, priority and the packed
        fields to queue; returns the ids replayed."""
        result: list[bytes] = await self.call("replay_dead_letters", [now, *groups])
        return [bytes(r).decode() for r in result]

    async def purge_dead_letters(self, task_ids: Sequence[str]) -> int:
        """Delete dead letters of ``task_ids`` (all when empty); the number deleted."""
        result: int = await self.call("purge_dead_letters", list(task_ids))
        return result

    async def kept_call(self, task_id: str) -> tuple[str, list[Any]] | None:
        """The priority and stream fields (flat) kept with a failed task's result, or ``None``."""
        reply: list[Any] | None = await self.call_ro("kept_call", [task_id])
        if not reply:
            return None
        return bytes(reply[0]).decode(), list(reply[1])

    async def retry_failed(self, task_id: str, now: int, priority: str, fields: bytes) -> int:
        """Queue a failed task again with ``fields`` (packed); 1 queued, 0 nothing kept, -1 a
        live task holds the id."""
        result: int = await self.call("retry_failed", [task_id, now, priority, fields])
        return result

    async def progress(
        self,
        worker_id: str,
        job: tuple[str, str, str, str, int],
        start: int,
        now: int,
        value: bytes,
    ) -> bool:
        """Record the encoded progress ``value`` of a running task and emit its event.

        :param job: the task's id, priority, message id, function name and tries
        :param start: when the task started (ms), to mark it started first (once); 0 not to
        :return: ``False`` when the worker does not own the task's message (any more)
        """
        return bool(await self.call("progress", [worker_id, *job, start, now, value]))

    async def delete_result(self, task_id: str) -> int:
        """Delete a finished task's result and kept call; 1 deleted, 0 none, -1 the id is live."""
        result: int = await self.call("delete_result", [task_id])
        return result
