"""Deployment: the same module enqueues work and is run by ``streaq run``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")
HERE = Path(__file__).resolve().parent

# --8<-- [start:app]
# deployment.py: run it with `streaq run deployment:worker --workers 2`
worker: Worker[None] = Worker(
    redis_url=REDIS_URL,
    queue_name=QUEUE,
    concurrency=32,
    idle_timeout=60,  # a dead process's tasks are taken over after a minute
    grace_period=30,  # on SIGTERM, running tasks get 30 s to finish
)


@worker.task(timeout=60)
async def resize(image: str, width: int) -> str:
    await anyio.sleep(0.01)
    return f"{image}@{width}"


# --8<-- [end:app]


async def main() -> None:
    async with worker:
        tasks = [await resize.enqueue(f"img{n}.png", 320) for n in range(20)]

    # --8<-- [start:cli]
    # two worker processes that exit once the queue is empty
    command = [sys.executable, "-m", "streaq", "run", "deployment:worker", "--workers", "2"]
    command.append("--burst")
    # --8<-- [end:cli]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    with anyio.fail_after(40):
        finished = await anyio.run_process(command, cwd=HERE, env=env, check=False)
    assert finished.returncode == 0, finished.stderr.decode()

    async with worker:
        results = [await task.result(timeout=5) for task in tasks]
    assert all(result.success for result in results)


if __name__ == "__main__":
    anyio.run(main)
