"""Benchmark of streaq's Redis layer against redis-py's asyncio client and coredis.

Theory of operation
-------------------
Three workloads -- sequential ``PING``, sequential ``SET`` (latency-bound: one command in flight)
and pipelines of ``SET`` s (throughput-bound) -- run for each *contender*: streaq's layer on
asyncio, asyncio+uvloop and trio, ``redis.asyncio`` (with hiredis) and coredis, on asyncio. Each
contender runs in a fresh event loop; the rounds are interleaved (A B C ... A B C ...) so that drift
in machine load hits everyone alike, and the table reports the minimum and median over the rounds
with the ratio of medians against redis-py (below 1.00 = faster than redis-py). It never flushes
anything: all keys carry a unique ``streaq-bench:`` prefix and are deleted at the end.
Environment: ``REDIS_URL`` (default ``redis://localhost:6379``), ``BENCH_OPS`` (default 20000),
``BENCH_ROUNDS`` (default 3).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from streaq._redis import open_client

URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
OPS = int(os.environ.get("BENCH_OPS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PIPELINES, PIPELINE_SIZE = 100, 100
PREFIX = f"streaq-bench:{uuid.uuid4().hex[:8]}:"
KEY = PREFIX + "k"
PIPE_KEYS = [f"{PREFIX}p{i}" for i in range(PIPELINE_SIZE)]
VALUE = b"v" * 64
WORKLOADS = ("ping", "set", "pipeline")

#: timings[workload] = seconds for one run
Timings = dict[str, float]


async def _measure(
    ping: Callable[[], Awaitable[Any]],
    set_: Callable[[], Awaitable[Any]],
    pipeline: Callable[[], Awaitable[Any]],
) -> Timings:
    result: Timings = {}
    for name, call, count in (
        ("ping", ping, OPS),
        ("set", set_, OPS),
        ("pipeline", pipeline, PIPELINES),
    ):
        for _ in range(min(count, 200)):  # warm up: connections, caches
            await call()
        start = time.perf_counter()
        for _ in range(count):
            await call()
        result[name] = time.perf_counter() - start
    return result


async def _streaq() -> Timings:
    async with open_client(URL) as client:
        commands = [("SET", key, VALUE) for key in PIPE_KEYS]
        return await _measure(
            lambda: client.execute("PING"),
            lambda: client.execute("SET", KEY, VALUE),
            lambda: client.pipeline(commands),
        )


async def _redis_py() -> Timings:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(URL)
    try:

        async def pipeline() -> Any:
            pipe = client.pipeline(transaction=False)
            for key in PIPE_KEYS:
                pipe.set(key, VALUE)
            return await pipe.execute()

        return await _measure(client.ping, lambda: client.set(KEY, VALUE), pipeline)
    finally:
        await client.aclose()


async def _coredis() -> Timings:
    import coredis

    client = coredis.Redis.from_url(URL)
    async with client:

        async def pipeline() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key in PIPE_KEYS:
                    pipe.set(key, VALUE)

        return await _measure(client.ping, lambda: client.set(KEY, VALUE), pipeline)


def _run_anyio(backend: str, options: dict[str, Any]) -> Callable[[], Timings]:
    return lambda: anyio.run(_streaq, backend=backend, backend_options=options)


CONTENDERS: dict[str, Callable[[], Timings]] = {
    "streaq asyncio": _run_anyio("asyncio", {}),
    "streaq asyncio+uvloop": _run_anyio("asyncio", {"use_uvloop": True}),
    "streaq trio": _run_anyio("trio", {}),
    "redis-py asyncio": lambda: asyncio.run(_redis_py()),
    "coredis asyncio": lambda: anyio.run(_coredis, backend="asyncio"),
}
BASELINE = "redis-py asyncio"


async def _cleanup() -> None:
    async with open_client(URL) as client:
        await client.execute("DEL", KEY, *PIPE_KEYS)


def main() -> None:
    """Run every contender ``ROUNDS`` times, interleaved, and print the table."""
    runs: dict[str, list[Timings]] = {name: [] for name in CONTENDERS}
    skipped: dict[str, str] = {}
    try:
        for _ in range(ROUNDS):
            for name, run in CONTENDERS.items():
                if name in skipped:
                    continue
                try:
                    runs[name].append(run())
                except Exception as exc:  # a competitor's API changed: report, don't abort
                    skipped[name] = f"{type(exc).__name__}: {exc}"
    finally:
        anyio.run(_cleanup)
    print(
        f"{OPS} sequential PING / SET, {PIPELINES} pipelines x {PIPELINE_SIZE} SET; "
        f"{ROUNDS} interleaved rounds; seconds min / median; ratio = median / {BASELINE} median"
    )
    header = f"{'contender':24}" + "".join(f"{w:>28}" for w in WORKLOADS)
    print(header)
    print("-" * len(header))
    base = {w: statistics.median(t[w] for t in runs[BASELINE]) for w in WORKLOADS}
    for name, timings in runs.items():
        if name in skipped:
            print(f"{name:24} skipped ({skipped[name]})")
            continue
        cells = []
        for workload in WORKLOADS:
            values = [t[workload] for t in timings]
            median = statistics.median(values)
            cells.append(f"{min(values):8.3f} {median:8.3f} {median / base[workload]:6.2f}x")
        print(f"{name:24}" + "".join(f"{cell:>28}" for cell in cells))
