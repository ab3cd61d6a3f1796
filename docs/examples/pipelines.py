"""Pipelines and dependencies: then / |, otherwise / ^, and after=."""

from __future__ import annotations

import os

import anyio

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


# --8<-- [start:tasks]
@worker.task
async def fetch(url: str) -> tuple[str, int]:
    return url, len(url) * 100


@worker.task
async def describe(url: str, size: int, unit: str = "bytes") -> str:
    return f"{url}: {size} {unit}"


@worker.task
async def shout(text: str) -> str:
    return text.upper()


@worker.task
async def parse_price(text: str) -> float:
    return float(text)


@worker.task
async def default_price(text: str) -> float:
    return 0.0


# --8<-- [end:tasks]


@worker.task
async def step(n: int) -> int:
    if n < 0:
        raise ValueError("negative step")
    return n


@worker.task
async def total() -> str:
    return "all steps done"


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        # --8<-- [start:then]
        # fetch's (url, size) tuple is unpacked into describe's first two parameters
        described = await fetch.enqueue("example.com").then(describe, unit="B")
        assert (await described.result(timeout=10)).result == "example.com: 1100 B"

        # `|` is `then` without extra arguments; a chain is enqueued atomically
        loud = await (fetch.enqueue("a.io") | describe | shout)
        assert (await loud.result(timeout=10)).result == "A.IO: 400 BYTES"
        # --8<-- [end:then]

        # --8<-- [start:otherwise]
        # the fallback runs with the same arguments, only if the task fails
        rescued = await parse_price.enqueue("twelve").otherwise(default_price)
        assert (await rescued.result(timeout=10)).result == 0.0

        # `^` is `otherwise`; on success the fallback ends with the task's own result
        parsed = await (parse_price.enqueue("12.5") ^ default_price)
        assert (await parsed.result(timeout=10)).result == 12.5
        # --8<-- [end:otherwise]

        # --8<-- [start:after]
        first = await step.enqueue(1)
        second = await step.enqueue(2)
        report = await total.enqueue().start(after=[first.id, second.id])
        assert (await report.result(timeout=10)).result == "all steps done"

        # a failed dependency fails its dependents, with an error naming it
        broken = await step.enqueue(-1)
        never = await total.enqueue().start(after=broken.id)
        outcome = await never.result(timeout=10)
        assert not outcome.success
        assert f"dependency {broken.id} failed" in str(outcome.exception)
        # --8<-- [end:after]

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
