"""Migrating from streaq 7.2: the behaviours that changed, each checked."""

from __future__ import annotations

import os

import anyio

from streaq import StreaqError, StreaqRetry, Worker
from streaq.types import StreaqCancelled

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

PRIORITIES = ["low", "high"]
worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, priorities=PRIORITIES)


@worker.task
async def noop() -> None:
    pass


@worker.task(max_tries=2)
async def always_fails() -> None:
    raise StreaqRetry("upstream still down", delay=0)


async def main() -> None:
    # --8<-- [start:fixes]
    assert PRIORITIES == ["low", "high"]  # the caller's list is copied, never mutated
    try:
        noop.enqueue().start(priority="urgent")  # unknown priority: an error at enqueue
    except StreaqError as error:
        print(error)  # unknown priority 'urgent'; this worker's priorities are [...]
    else:
        raise AssertionError("7.2 accepted unknown priorities")
    try:
        _ = worker.context  # outside a running worker: StreaqError (7.2: LookupError)
    except StreaqError:
        print("worker.context needs a running worker")

    async with worker:  # no worker runs
        queued = await noop.enqueue()
        assert await queued.abort()  # a queued task is aborted at once
        aborted = await queued.result(timeout=5)
        assert isinstance(aborted.exception, StreaqCancelled)

        delayed = await noop.enqueue().start(delay=3600)
        assert await delayed.abort()  # an aborted delayed task gets a result too
        assert not (await delayed.result(timeout=5)).success

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        async with worker:  # entering a running worker works (7.2 raised)
            tried = await (await always_fails.enqueue()).result(timeout=10)
        assert tried.tries == 2  # tries == max_tries after the last try
        assert "upstream still down" in str(tried.exception)  # the last error is kept
        tg.cancel_scope.cancel()  # a clean shutdown, like SIGTERM
    # --8<-- [end:fixes]


if __name__ == "__main__":
    anyio.run(main)
