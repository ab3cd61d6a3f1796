"""Listing a queue's tasks by status (``Worker.get_tasks_by_status``) and its finishes
(``Worker.finish_times``).

Unfinished tasks are found through the queue's task index (the ``t`` hash, scanned in pages) and
described by the ``info`` server function, many per round trip; finished ones through their result
keys (``SCAN``, then ``MGET`` of each page). ``limit`` is honoured exactly: no hidden cap below it.
Finish times decode only the header of each result record, never its payload.
"""

from __future__ import annotations

from typing import Any

from ._codec import KIND_ERROR, decode_record, index_state
from ._library import _PREFIX, LIBRARY
from ._queue import QueueClient, build_result
from ._schema import DELAYED, QUEUED, WAITING
from .task import TaskInfo, TaskResult, TaskStatus
from .types import StreaqError

_PAGE = 500
# the index states a status may be found in (the info function tells running from queued)
_STATES = {
    TaskStatus.SCHEDULED: {DELAYED, WAITING},
    TaskStatus.QUEUED: {QUEUED},
    TaskStatus.RUNNING: {QUEUED},
}


async def _unfinished(
    client: QueueClient, status: TaskStatus, priority: str | None, limit: int
) -> list[TaskInfo]:
    wanted = _STATES[status]
    found: list[TaskInfo] = []
    cursor: Any = 0
    index = client.keys.tasks
    while len(found) < limit:
        cursor, flat = await client.redis.execute("HSCAN", index, cursor, "COUNT", _PAGE)
        pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
        ids = [bytes(k).decode() for k, v in pairs if index_state(bytes(v)) in wanted]
        if ids:
            calls = [(_PREFIX + "info", [client.keys.prefix], [task_id]) for task_id in ids]
            replies = await client.redis.fcall_pipeline(LIBRARY, calls, raise_on_error=False)
            for task_id, reply in zip(ids, replies, strict=True):
                if reply is None or isinstance(reply, Exception):
                    continue
                if priority is not None and bytes(reply[1]).decode() != priority:
                    continue
                info = client.info_from_reply(task_id, reply)
                if info.status == status and len(found) < limit:
                    found.append(info)
        if int(cursor) == 0:
            break
    return found


async def _results_page(client: QueueClient, cursor: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """One ``SCAN`` step over the queue's result keys: the next cursor and ``(task_id, record)``
    pairs (a result that expired between ``SCAN`` and ``MGET`` is left out)."""
    queue_keys = client.keys
    cursor, keys = await client.redis.execute(
        "SCAN", cursor, "MATCH", queue_keys.result_pattern, "COUNT", _PAGE
    )
    if not keys:
        return cursor, []
    records = await client.redis.execute("MGET", *keys)
    # a result key is the key of its task id with this many characters before the id
    skip = len(queue_keys.result(""))
    return cursor, [
        (bytes(key).decode()[skip:], record)
        for key, record in zip(keys, records, strict=True)
        if record is not None
    ]


async def _finished(client: QueueClient, limit: int) -> list[TaskResult[Any]]:
    found: list[TaskResult[Any]] = []
    cursor: Any = 0
    while len(found) < limit:
        cursor, page = await _results_page(client, cursor)
        for task_id, record in page[: limit - len(found)]:
            found.append(build_result(task_id, record, None, client.codec))
        if int(cursor) == 0:
            break
    return found


async def finish_times(client: QueueClient) -> list[tuple[int, bool]]:
    """``(finish_ms, success)`` of every stored result of the queue, in no particular order.

    A key matching the result pattern that does not hold a result record is skipped.
    """
    found: list[tuple[int, bool]] = []
    cursor: Any = 0
    while True:
        cursor, page = await _results_page(client, cursor)
        for _, record in page:
            try:
                header = decode_record(bytes(record))
            except Exception:
                continue  # not a result record (a foreign key matching the pattern)
            found.append((header.finish, header.kind != KIND_ERROR))
        if int(cursor) == 0:
            return found


async def tasks_by_status(
    client: QueueClient, status: TaskStatus, priority: str | None, limit: int
) -> list[TaskInfo] | list[TaskResult[Any]]:
    """Up to ``limit`` tasks in ``status`` (``TaskResult`` for DONE, ``TaskInfo`` otherwise).

    :raises StreaqError: for ``NOT_FOUND``, which has no listing, or an unknown status
    """
    if status == TaskStatus.DONE:
        return await _finished(client, limit)
    if status not in _STATES:
        raise StreaqError(
            f"cannot list tasks with status {str(status)!r}: use SCHEDULED, QUEUED, RUNNING or DONE"
        )
    return await _unfinished(client, status, priority, limit)
