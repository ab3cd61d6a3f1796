"""Migrating from arq and saq: the streaq side of the usual patterns."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")


# --8<-- [start:worker]
@dataclass
class Deps:
    greeting: str  # arq's ctx / saq's context entries: shared clients and settings


@asynccontextmanager
async def lifespan() -> AsyncIterator[Deps]:  # arq on_startup/on_shutdown, saq startup/shutdown
    yield Deps(greeting="hello")


# arq's WorkerSettings / saq's Queue + Worker: one object, used by producers and workers
worker: Worker[Deps] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, lifespan=lifespan)


@worker.task(timeout=30, max_tries=3)  # arq's functions=[...] / saq's functions=[...]
async def greet(name: str) -> str:  # no ctx argument: worker.context instead
    return f"{worker.context.greeting}, {name}"


@worker.cron("*/5 * * * *")  # arq's cron(...) / saq's CronJob(...)
async def cleanup() -> None: ...


# --8<-- [end:worker]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)  # `streaq run module:worker` in production
        async with worker:
            # --8<-- [start:producer]
            task = await greet.enqueue("Ada")  # arq's enqueue_job / saq's enqueue
            result = await task.result(timeout=10)  # arq's Job.result / saq's Job.refresh
            assert result.result == "hello, Ada"  # raises the task's error if it failed

            # saq's apply (enqueue, then wait): the same two awaits
            assert (await (await greet.enqueue("Grace")).result(timeout=10)).result == (
                "hello, Grace"
            )

            # arq's _defer_by / saq's scheduled: a delay or a moment
            later = await greet.enqueue("Linus").start(delay=60)
            assert await later.abort()
            # --8<-- [end:producer]
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
