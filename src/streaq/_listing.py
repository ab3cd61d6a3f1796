"""Listing a queue's tasks by status (``Worker.get_tasks_by_status``).

Unfinished tasks are found through the queue's task index (the ``t`` hash, scanned in pages) and
described by the ``info`` server function, many per round trip; finished ones through their result
keys (``SCAN``). ``limit`` is honoured exactly: no hidden cap below it.
"""

from __future__ import annotations

from typing import Any

from ._codec import index_state
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


async def _finished(client: QueueClient, limit: int) -> list[TaskResult[Any]]:
    found: list[TaskResult[Any]] = []
    cursor: Any = 0
    queue_keys = client.keys
    # a result key is the key of its task id with this many characters before the id
    skip = len(queue_keys.result(""))
    while len(found) < limit:
        cursor, keys = await client.redis.execute(
            "SCAN", cursor, "MATCH", queue_keys.result_pattern, "COUNT", _PAGE
        )
        if keys:
            records = await client.redis.execute("MGET", *keys)
            for key, record in zip(keys, records, strict=True):
                if record is not None and len(found) < limit:
                    task_id = bytes(key).decode()[skip:]
                    found.append(build_result(task_id, record, None, client.codec))
        if int(cursor) == 0:
            break
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
