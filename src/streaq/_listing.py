"""Listing a queue's tasks by status (``Worker.get_tasks_by_status``) and its finishes
(``Worker.finish_times``).

Unfinished tasks are found through the queue's task index (the ``t`` hash, scanned in pages) and
described by the ``info`` server function, many per round trip; finished ones through their result
keys (``SCAN``, then ``MGET`` of each page). ``limit`` is honoured exactly: no hidden cap below it.
Finish times decode only the header of each result record, never its payload.

``scan_limit`` bounds the work of one call: the keys examined, counted as the ``COUNT`` asked of
each ``SCAN``/``HSCAN`` step. ``SCAN MATCH`` walks the whole database, not only the queue's keys,
so a caller serving many requests (the web UI) passes a limit and accepts an answer from the part
of the database it covered; without one the walk goes on until the cursor comes back to 0.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator
from typing import Any

from ._codec import KIND_ERROR, ResultRecord, decode_record, index_state
from ._library import _PREFIX, LIBRARY
from ._queue import QueueClient, build_result
from ._schema import DELAYED, GATED, QUEUED, WAITING
from .task import TaskInfo, TaskResult, TaskStatus
from .types import StreaqError

_PAGE = 500


class _Budget:
    """How many keys a scan may still examine (``None``: no limit)."""

    __slots__ = ("covered", "left")

    def __init__(self, scan_limit: int | None) -> None:
        if scan_limit is not None and scan_limit < 1:
            raise ValueError(f"scan_limit must be at least 1, not {scan_limit!r}")
        self.left = scan_limit
        #: whether a scan came back to cursor 0 (it walked the whole database)
        self.covered = False

    def take(self) -> int:
        """The ``COUNT`` of the next step, spent now."""
        if self.left is None:
            return _PAGE
        count = min(_PAGE, self.left)
        self.left -= count
        return count

    @property
    def spent(self) -> bool:
        """Whether no key may be examined any more."""
        return self.left == 0


# the index states a status may be found in (the info function tells running from queued)
_STATES = {
    TaskStatus.SCHEDULED: {DELAYED, WAITING},
    TaskStatus.QUEUED: {QUEUED, GATED},
    TaskStatus.RUNNING: {QUEUED},
}


async def _unfinished(
    client: QueueClient, status: TaskStatus, priority: str | None, limit: int, budget: _Budget
) -> list[TaskInfo]:
    wanted = _STATES[status]
    found: list[TaskInfo] = []
    cursor: Any = 0
    index = client.keys.tasks
    while len(found) < limit and not budget.spent:
        count = budget.take()
        cursor, flat = await client.redis.execute("HSCAN", index, cursor, "COUNT", count)
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


async def _results_page(
    client: QueueClient, cursor: Any, count: int
) -> tuple[Any, list[tuple[str, Any]]]:
    """One ``SCAN`` step over the queue's result keys: the next cursor and ``(task_id, record)``
    pairs (a result that expired between ``SCAN`` and ``MGET`` is left out)."""
    queue_keys = client.keys
    cursor, keys = await client.redis.execute(
        "SCAN", cursor, "MATCH", queue_keys.result_pattern, "COUNT", count
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


async def _result_headers(
    client: QueueClient, budget: _Budget
) -> AsyncIterator[tuple[str, ResultRecord]]:
    """``(task_id, header)`` of each stored result within the budget; ``budget.covered`` tells
    whether the walk reached the end. A key matching the result pattern that does not hold a
    result record (a foreign key) is skipped."""
    cursor: Any = 0
    while not budget.spent:
        cursor, page = await _results_page(client, cursor, budget.take())
        for task_id, record in page:
            try:
                header = decode_record(bytes(record))
            except Exception:
                continue
            yield task_id, header
        if int(cursor) == 0:
            budget.covered = True
            return


async def _finished(client: QueueClient, limit: int, budget: _Budget) -> list[TaskResult[Any]]:
    found: list[TaskResult[Any]] = []
    cursor: Any = 0
    while len(found) < limit and not budget.spent:
        cursor, page = await _results_page(client, cursor, budget.take())
        for task_id, record in page[: limit - len(found)]:
            found.append(build_result(task_id, record, None, client.codec))
        if int(cursor) == 0:
            break
    return found


async def recent_results(
    client: QueueClient,
    limit: int,
    offset: int = 0,
    failed_only: bool = False,
    scan_limit: int | None = None,
) -> list[TaskResult[Any]]:
    """Stored results, most recently finished first: ``limit`` of them from ``offset`` on, among
    those found within ``scan_limit`` keys examined (all of them without a limit).

    Sorting needs every result of the part scanned, so the scan goes on to its end (the cursor, or
    ``scan_limit``) whatever ``limit`` is. Only record headers are decoded while scanning and only
    the ids and finish times of the best ``offset + limit`` are kept; the page's records are read
    again at the end (one that expired meanwhile is left out).

    :raises ValueError: for a ``scan_limit`` below 1, or a negative ``limit`` or ``offset``
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative, not {limit!r} and {offset!r}")
    budget = _Budget(scan_limit)
    best: list[tuple[int, str]] = []  # a min-heap of the newest offset + limit so far
    keep = offset + limit
    if keep:
        async for task_id, header in _result_headers(client, budget):
            if failed_only and header.kind != KIND_ERROR:
                continue
            entry = (header.finish, task_id)
            if len(best) < keep:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                heapq.heapreplace(best, entry)
    wanted = sorted(best, reverse=True)[offset:]
    if not wanted:
        return []
    records = await client.redis.execute("MGET", *(client.keys.result(i) for _, i in wanted))
    return [
        build_result(task_id, record, None, client.codec)
        for (_, task_id), record in zip(wanted, records, strict=True)
        if record is not None
    ]


async def finish_times(
    client: QueueClient, scan_limit: int | None = None
) -> tuple[list[tuple[int, bool]], bool]:
    """``(finish_ms, success)`` of the queue's stored results found within ``scan_limit`` keys
    examined (all of them without a limit), in no particular order, and whether the scan covered
    the whole database.

    A key matching the result pattern that does not hold a result record is skipped.

    :raises ValueError: for a ``scan_limit`` below 1
    """
    budget = _Budget(scan_limit)
    found = [
        (header.finish, header.kind != KIND_ERROR)
        async for _, header in _result_headers(client, budget)
    ]
    return found, budget.covered


async def tasks_by_status(
    client: QueueClient,
    status: TaskStatus,
    priority: str | None,
    limit: int,
    scan_limit: int | None = None,
) -> list[TaskInfo] | list[TaskResult[Any]]:
    """Up to ``limit`` tasks in ``status`` (``TaskResult`` for DONE, ``TaskInfo`` otherwise),
    among those found within ``scan_limit`` keys examined.

    :raises StreaqError: for ``NOT_FOUND``, which has no listing, or an unknown status
    :raises ValueError: for a ``scan_limit`` below 1
    """
    budget = _Budget(scan_limit)
    if status == TaskStatus.DONE:
        return await _finished(client, limit, budget)
    if status not in _STATES:
        raise StreaqError(
            f"cannot list tasks with status {str(status)!r}: use SCHEDULED, QUEUED, RUNNING or DONE"
        )
    return await _unfinished(client, status, priority, limit, budget)
