"""A worker never claims more messages than it has room for, whoever claims them.

The reader (blocking ``XREADGROUP`` of new messages) and the reclaimer (``XAUTOCLAIM`` of a dead
worker's messages) both push jobs into the bounded job channel with ``send_nowait``, each sized
by a ``free()`` count it read *before* awaiting Redis. When a reclaim lands while the reader is
blocked, the blocked read still returns up to its old count, the channel is full and
``WouldBlock`` escapes the run: the worker process dies. The kill suite hits this at random
(``self-crashes`` in its figures); this test provokes it on purpose.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from streaq import Worker

from .conftest import delete_keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def clean_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    try:
        yield queue_name
    finally:
        delete_keys(redis_url, f"streaq:{{{queue_name}}}:*")


async def test_reclaim_during_blocked_read_does_not_overfill(
    redis_url: str, clean_queue: str
) -> None:
    worker: Worker[Any] = Worker(
        redis_url=redis_url,
        queue_name=clean_queue,
        concurrency=1,
        prefetch=1,
        idle_timeout=1,
        handle_signals=False,
    )

    @worker.task(name="slow")
    async def slow(n: int) -> int:
        await anyio.sleep(1)
        return n

    @worker.task(name="quick")
    async def quick(n: int) -> int:
        return n

    stream = worker.keys.stream(worker.priorities[0])
    async with worker:
        client = worker._client.redis
        dead = [slow.enqueue(n) for n in range(2)]
        await worker.enqueue_many(dead)
        # a worker that claimed both and died
        await client.execute(
            "XREADGROUP", "GROUP", "g", "ghost", "COUNT", 2, "STREAMS", stream, ">"
        )
        crash: str | None = None
        try:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run_async)
                    # the reader is now blocked reading up to 2 new messages; wait for the reclaim
                    while True:
                        summary = await client.execute("XPENDING", stream, "g")
                        owners = {bytes(c).decode(): int(n) for c, n in summary[3] or []}
                        if owners.get(worker.id) == 2:
                            break
                        await anyio.sleep(0.01)
                    fresh = [quick.enqueue(n) for n in range(2)]
                    await worker.enqueue_many(fresh)
                    results = [await t.result() for t in [*dead, *fresh]]
                    tg.cancel_scope.cancel()
        except Exception as exc:  # the run's exception group, or the timeout
            crash = repr(exc)
            del exc
        # the crash leaves memory streams unclosed: collect them now, within this test
        gc.collect()
        assert crash is None, crash
    assert [r.result for r in results] == [0, 1, 0, 1]
