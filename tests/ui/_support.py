"""Helpers of the UI tests: key cleanup and the worker module the browser tests run."""

from __future__ import annotations

import redis

WORKER_MODULE = '''
"""The worker of the UI browser tests (written into the test's tmp dir)."""
import os

import anyio

from streaq import Worker

worker = Worker(
    redis_url=os.environ["REDIS_URL"],
    queue_name=os.environ["STREAQ_QUEUE"],
    priorities=["low", "high"],
    idle_timeout=5,
)


@worker.task
async def sleeper(seconds: float) -> float:
    await anyio.sleep(seconds)
    return seconds


@worker.task
async def boom() -> None:
    raise ValueError("kaboom")


@worker.cron("*/5 * * * *")
async def tick() -> None:
    pass
'''


def delete_queue_keys(redis_url: str, queue_name: str) -> None:
    """Delete every key of ``queue_name``."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
