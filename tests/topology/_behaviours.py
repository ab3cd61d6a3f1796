"""The core behaviours every topology must pass: one worker, tasks end to end."""

from __future__ import annotations

from typing import Any

import anyio

from streaq import TaskStatus, Worker
from streaq.types import StreaqCancelled


async def check_core_behaviours(worker: Worker[Any]) -> None:
    """Enqueue and await a result, a ``then`` chain, a delayed task, and abort a queued task.

    :param worker: a fresh worker (``concurrency=1``) on the topology, not yet running.
    """
    release = anyio.Event()
    blocking = anyio.Event()

    @worker.task
    async def double(x: int) -> int:
        return 2 * x

    @worker.task
    async def scale(x: int, factor: int = 1) -> int:
        return x * factor

    @worker.task
    async def block() -> str:
        blocking.set()
        await release.wait()
        return "released"

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(20):
            assert (await (await double.enqueue(21)).result()).result == 42
            chained = await double.enqueue(2).then(scale, factor=3)
            assert (await chained.result()).result == 12
            delayed = await double.enqueue(5).start(delay=1)
            assert await delayed.status() == TaskStatus.SCHEDULED
            assert (await delayed.result()).result == 10
            # with concurrency 1 and `block` running, the next task waits (queued or prefetched)
            blocker = await block.enqueue()
            await blocking.wait()
            queued = await double.enqueue(7)
            assert await queued.abort() is True
            assert isinstance((await queued.result()).exception, StreaqCancelled)
            release.set()
            assert (await blocker.result()).result == "released"
        tg.cancel_scope.cancel()
