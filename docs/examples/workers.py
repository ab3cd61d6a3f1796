"""Workers: a lifespan shared by tasks, middleware, concurrency, burst mode and Redis access."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from streaq import RedisPool, Worker
from streaq.types import ReturnCoroutine

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")


# --8<-- [start:lifespan]
@dataclass
class Resources:
    """Whatever tasks share: connection pools, clients, configuration."""

    stock: dict[str, int] = field(default_factory=dict)


@asynccontextmanager
async def lifespan() -> AsyncIterator[Resources]:
    resources = Resources(stock={"apple": 3})  # open pools, clients... here
    try:
        yield resources
    finally:
        resources.stock.clear()  # ...and close them here


worker: Worker[Resources] = Worker(
    redis_url=REDIS_URL,
    queue_name=QUEUE,
    lifespan=lifespan,  # its value is worker.context, a Resources
    concurrency=8,  # tasks running at once
    prefetch=0,  # fetch no messages beyond those it can start
    grace_period=10,  # on SIGINT/SIGTERM, running tasks get 10 s to finish
)


@worker.task
async def in_stock(item: str) -> int:
    return worker.context.stock.get(item, 0)  # typed: worker.context is a Resources


# --8<-- [end:lifespan]


# --8<-- [start:middleware]
timings: list[tuple[str, float]] = []


@worker.middleware
def timed(call: ReturnCoroutine) -> ReturnCoroutine:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            timings.append((timed.context.fn_name, time.perf_counter() - start))

    return wrapper


# --8<-- [end:middleware]


# --8<-- [start:redis]
pool = RedisPool(REDIS_URL, max_connections=32)  # settings only: it connects on first use
emails: Worker[None] = Worker(queue_name=f"{QUEUE}-emails", redis_pool=pool)
reports: Worker[None] = Worker(queue_name=f"{QUEUE}-reports", redis_pool=pool)


@emails.task
async def send(to: str) -> int:
    # commands on the worker's client; keys under emails.prefix live in the queue's slot
    return await emails.redis.incr(emails.prefix + "sent")


async def application() -> None:
    async with pool as redis, emails, reports:  # one connection pool for the three of them
        await redis.set(emails.prefix + "greeting", "hello", ex=60)
        assert await reports.redis.get(emails.prefix + "greeting") == b"hello"  # bytes
        await send.enqueue("ada@example.com")


# --8<-- [end:redis]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        assert (await (await in_stock.enqueue("apple")).result(timeout=10)).result == 3
        tg.cancel_scope.cancel()
    assert timings[0][0] == "in_stock"

    # --8<-- [start:burst]
    async with worker:  # a producer: connect, enqueue, disconnect
        tasks = [await in_stock.enqueue(item) for item in ("apple", "pear")]

    worker.burst = True  # like `streaq run --burst`: stop once the queue is empty
    await worker.run_async()

    async with worker:
        results = [await task.result(timeout=5) for task in tasks]
    assert [result.result for result in results] == [3, 0]
    # --8<-- [end:burst]

    await application()
    emails.burst = True
    await emails.run_async()
    async with emails:
        assert await emails.redis.get(emails.prefix + "sent") == b"1"


if __name__ == "__main__":
    anyio.run(main)
