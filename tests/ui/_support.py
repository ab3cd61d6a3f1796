"""Helpers of the UI tests: key cleanup, the worker module the browser tests run, and
``python -m streaq`` children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

import streaq

# children import streaq from this source tree even when it is not installed
SRC = str(Path(streaq.__file__).resolve().parent.parent)

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


def child_env() -> dict[str, str]:
    """The environment of ``python -m streaq`` children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [SRC, env.get("PYTHONPATH", "")] if p)
    return env


def streaq_command(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streaq *args`` in ``cwd`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "streaq", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_streaq(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m streaq *args`` in ``cwd`` (stderr captured, stdout discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "streaq", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
