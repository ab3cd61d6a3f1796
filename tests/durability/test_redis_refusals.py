"""Redis refusing commands for a while without being down: out of memory, busy running a script.

Neither is an outage (the server answers), and neither ran the refused command: the worker's
duties wait them out with a backoff, record what they were recording once the server accepts
writes again, and never exit.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis
from servers import ServerFactory

from streaq import Worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(60)]


async def test_out_of_memory_while_finishing_is_waited_out(
    redis_server: ServerFactory, queue_name: str
) -> None:
    server = redis_server()
    admin = redis.Redis.from_url(server.url)
    worker = Worker(redis_url=server.url, queue_name=queue_name, handle_signals=False)
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    @worker.task
    async def gated(n: int) -> int:
        runs.append(n)
        started.set()
        await release.wait()
        return n

    try:
        async with worker, anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            with anyio.fail_after(30):
                task = await gated.enqueue(7)
                await started.wait()
                # every write is refused now (OOM): the result cannot be recorded
                admin.config_set("maxmemory-policy", "noeviction")
                admin.config_set("maxmemory", 1)
                release.set()

                await _refused(admin, "OOM")
                assert admin.exists(worker.keys.result(task.id)) == 0
                admin.config_set("maxmemory", 0)
                result = await task.result()
                assert result.result == 7
                # the worker still serves
                again = await gated.enqueue(8)
                assert (await again.result()).result == 8
            tg.cancel_scope.cancel()
    finally:
        admin.close()
    assert runs == [7, 8]


async def test_a_busy_script_is_waited_out(redis_server: ServerFactory, queue_name: str) -> None:
    server = redis_server()
    admin = redis.Redis.from_url(server.url)
    worker = Worker(
        redis_url=server.url, queue_name=queue_name, handle_signals=False, concurrency=4
    )
    runs: list[int] = []

    @worker.task
    async def work(n: int) -> int:
        runs.append(n)
        await anyio.sleep(0.05)
        return n

    def keep_busy() -> None:
        # a script holding the server for a second: other commands are answered BUSY meanwhile
        blocker = redis.Redis.from_url(server.url)
        try:
            blocker.eval(BUSY_SCRIPT, 0)
        finally:
            blocker.close()

    try:
        admin.config_set("busy-reply-threshold", 100)
        async with worker, anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            with anyio.fail_after(30):
                tasks: list[Any] = [work.enqueue(n) for n in range(80)]
                await worker.enqueue_many(tasks)
                tg.start_soon(anyio.to_thread.run_sync, keep_busy)
                await _refused(admin, "BUSY")
                results = [await t.result() for t in tasks]
                assert [r.result for r in results] == list(range(80))
            tg.cancel_scope.cancel()
    finally:
        admin.close()
    assert sorted(runs) == list(range(80))


BUSY_SCRIPT = """
local deadline = tonumber(redis.call('TIME')[1]) + 1
while tonumber(redis.call('TIME')[1]) <= deadline do end
return 1
"""


async def _refused(admin: redis.Redis, prefix: str) -> None:
    """Wait until the server has refused some command with the error ``prefix``."""
    while True:
        try:
            stats = await anyio.to_thread.run_sync(admin.info, "errorstats")
        except redis.ResponseError as e:
            if str(e).startswith(prefix):
                return  # refused for this very reason
            raise
        if f"errorstat_{prefix}" in stats:
            return
        await anyio.sleep(0.02)
