"""Priorities: named queues, read highest first."""

from __future__ import annotations

import os

import anyio

from streaq import StreaqError, Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

# --8<-- [start:worker]
worker: Worker[None] = Worker(
    redis_url=REDIS_URL,
    queue_name=QUEUE,
    priorities=["low", "normal", "high"],  # lowest first
    concurrency=1,
    prefetch=0,
)
# --8<-- [end:worker]

order: list[str] = []


@worker.task
async def job(label: str) -> None:
    order.append(label)


async def main() -> None:
    # --8<-- [start:enqueue]
    async with worker:
        await job.enqueue("bulk export")  # no priority: the lowest, "low"
        await job.enqueue("nightly report").start(priority="normal")
        await job.enqueue("password reset").start(priority="high")
        try:
            job.enqueue("oops").start(priority="urgent")
        except StreaqError as error:
            print(error)  # unknown priority 'urgent'; ...

    worker.burst = True
    await worker.run_async()
    assert order == ["password reset", "nightly report", "bulk export"]
    # --8<-- [end:enqueue]


if __name__ == "__main__":
    anyio.run(main)
