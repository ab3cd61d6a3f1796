"""Getting started: define tasks, run a worker, enqueue work and await typed results."""

from __future__ import annotations

import os
from dataclasses import dataclass

import anyio

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, concurrency=16)


@dataclass
class Invoice:
    customer: str
    total: float


@worker.task
async def price(item: str, quantity: int) -> float:
    """An async task: runs on the worker's event loop."""
    await anyio.sleep(0.01)
    return {"apple": 0.5, "pear": 0.75}.get(item, 1.0) * quantity


@worker.task
def invoice(total: float, customer: str) -> Invoice:
    """A sync task: runs in one of the worker's threads."""
    return Invoice(customer, round(total * 1.2, 2))


async def main() -> None:
    async with anyio.create_task_group() as tg:
        # run a worker in this process; in production run `streaq run getting_started:worker`
        await tg.start(worker.run_async)

        task = await price.enqueue("apple", 4)
        result = await task.result(timeout=10)
        assert result.success
        assert result.result == 2.0  # a float, as `price` is annotated

        chained = await price.enqueue("pear", 8).then(invoice, customer="ACME")
        final = await chained.result(timeout=10)
        assert final.result == Invoice("ACME", 7.2)  # decoded back into an Invoice

        tg.cancel_scope.cancel()  # stop the worker


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
