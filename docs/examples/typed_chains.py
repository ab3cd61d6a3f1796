"""Typing: mypy --strict checks every link of a chain."""

from __future__ import annotations

import os
from typing import NamedTuple

import anyio

from streaq import Worker
from streaq.task import TaskResult

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


# --8<-- [start:tasks]
class Size(NamedTuple):
    width: int
    height: int


@worker.task
async def measure(path: str) -> Size:
    return Size(640, 480)


@worker.task
async def area(width: int, height: int, scale: float = 1.0) -> float:
    return width * height * scale


@worker.task
def label(value: float) -> str:
    return f"{value:.0f} px²"


@worker.task
async def describe(size: Size) -> str:  # takes a Size whole: not for a link after measure
    return f"{size.width}×{size.height}"


# --8<-- [end:tasks]


# --8<-- [start:rejected]
async def rejected_by_mypy() -> None:
    """Each line is an error for mypy; the ignores say which (unused ones are errors too)."""
    measure.enqueue("x").then(label)  # type: ignore[arg-type]
    measure.enqueue("x").then(area, scale="big")  # type: ignore[call-overload]
    measure.enqueue("x") ^ area  # type: ignore[operator]
    # the Size result is unpacked, never passed whole: such a link cannot be awaited (misc),
    # and the call is deprecated (reported with mypy's `deprecated` error code enabled)
    await measure.enqueue("x").then(describe)  # type: ignore[deprecated, misc]


# --8<-- [end:rejected]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        # --8<-- [start:checked]
        # Size is unpacked into (width, height); scale is checked against area's parameters
        chain = await (measure.enqueue("cat.png").then(area, scale=0.5) | label)
        result: TaskResult[str] = await chain.result(timeout=10)  # the last task's return type
        assert result.result == "153600 px²"
        # --8<-- [end:checked]

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
