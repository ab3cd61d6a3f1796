"""Helpers of the core suite: building and running workers, deleting a queue's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import redis

from streaq import Worker

RunWorker = Callable[[Worker[Any]], AbstractAsyncContextManager[Worker[Any]]]
WorkerFactory = Callable[..., Worker[Any]]


def delete_queue_keys(redis_url: str, queue_name: str) -> None:
    """Delete every key of ``queue_name`` (``SCAN MATCH streaq:{<queue>}:*`` then ``DEL``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def make_worker(redis_url: str, queue_name: str, **options: Any) -> Worker[Any]:
    """A worker for tests: no signal handling, short leases."""
    options.setdefault("concurrency", 8)
    options.setdefault("idle_timeout", 5)
    options.setdefault("handle_signals", False)
    return Worker(redis_url=redis_url, queue_name=queue_name, **options)


@asynccontextmanager
async def running(worker: Worker[Any]) -> AsyncIterator[Worker[Any]]:
    """Run ``worker`` in a task group for the duration of the block, then cancel it."""
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        try:
            yield worker
        finally:
            tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], Awaitable[bool]], interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds (the caller bounds the wait with ``fail_after``)."""
    while True:
        if await predicate():
            return
        await anyio.sleep(interval)
