"""Helpers of the UI tests: key cleanup, the worker module the browser tests run, and
``python -m streaq`` children."""

from __future__ import annotations

from children import SRC as SRC
from children import child_env as child_env
from children import delete_queue_keys as delete_queue_keys
from children import spawn_streaq as spawn_streaq
from children import streaq_command as streaq_command

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
