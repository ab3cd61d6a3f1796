"""No keys leak: after a mixed workload only result keys (and the kept calls of failed tasks, the
progress of tasks, the event stream) with a TTL remain (checked with SCAN)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq.task import Task
from streaq.types import StreaqRetry

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio

EVERY_SECOND = "* * * * * * *"
SOON = timedelta(milliseconds=10)


def _register(worker: Worker[Any], cron_runs: list[int], cron_twice: anyio.Event | None) -> Any:
    @worker.task(max_tries=3)
    async def work(n: int) -> int:
        if n % 7 == 0:
            raise ValueError(n)
        return n

    @worker.task(max_tries=2)
    async def flaky(n: int) -> int:
        if n % 5 == 0 or (n % 2 == 0 and flaky.context.tries < 2):
            raise StreaqRetry(delay=SOON)  # n % 5 == 0 runs out of tries
        return n

    @worker.task
    async def inc(x: int) -> int:
        await inc.context.progress(x)
        return x + 1

    @worker.task
    async def picky(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(x)
        return x

    @worker.task
    async def fallback(x: int) -> int:
        return -x

    @worker.task
    async def blocker(n: int) -> None:
        await blocker.context.progress(n)
        await anyio.sleep(60)

    @worker.task(unique=True, timeout=10)
    async def single(n: int) -> int:
        await anyio.sleep(0.001)
        return n

    @worker.task
    async def repeated() -> None:
        pass

    if cron_twice is not None:

        @worker.cron(EVERY_SECOND)
        async def ticker() -> None:
            cron_runs.append(1)
            if len(cron_runs) >= 2:
                cron_twice.set()

    return work, flaky, inc, picky, fallback, blocker, single, repeated


def _size(client: redis.Redis, key: bytes, kind: str) -> int:
    sizes = {"hash": client.hlen, "set": client.scard, "zset": client.zcard, "list": client.llen}
    size = sizes.get(kind)
    return int(size(key)) if size is not None else 1


def leftovers(redis_url: str, queue: str) -> list[str]:
    """Every key of the queue that should not be there, with the reason."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"streaq:{{{queue}}}:"
    bad: list[str] = []
    try:
        for raw in client.scan_iter(match=prefix + "*", count=1000):
            key = raw.decode()
            name = key[len(prefix) :]
            kind = str(client.type(raw), "ascii")  # type: ignore[arg-type]
            if name.startswith(("r:", "fc:", "wi:", "pg:")) or name == "ev":
                # results, the calls of failed tasks and the progress of tasks kept as long as
                # their results, the reports of workers (a retiring worker deletes its own), and
                # the bounded event stream
                if client.pttl(raw) <= 0:
                    bad.append(f"{name}: result without a TTL")
            elif name.startswith("s:"):
                if client.xlen(raw):
                    bad.append(f"{name}: stream not empty")
                pending = client.xpending(raw, "g")
                if pending["pending"]:
                    bad.append(f"{name}: {pending['pending']} pending")
            elif name == "workers":
                continue  # worker heartbeats, not task state
            else:
                bad.append(f"{name} ({kind}, {_size(client, raw, kind)} members)")
    finally:
        client.close()
    return bad


async def test_mixed_workload_leaves_only_results(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str, clean_queue: str
) -> None:
    worker = worker_factory(concurrency=32)
    cron_runs: list[int] = []
    cron_twice = anyio.Event()
    work, flaky, inc, picky, fallback, blocker, single, repeated = _register(
        worker, cron_runs, cron_twice
    )
    tasks: list[Task[Any, Any]] = []
    async with worker:
        # aborted before any worker runs: queued, delayed, waiting on a dependency, chain tails
        doomed = [work.enqueue(n) for n in range(20)]
        doomed += [work.enqueue(n).start(delay=60) for n in range(20)]
        await worker.enqueue_many(doomed)
        doomed += [await work.enqueue(n).start(after=doomed[20].id) for n in range(10)]
        for n in range(10):
            head = work.enqueue(n).start(delay=60)
            doomed += [await head.then(inc), head]  # the tail first, then its head
        for task in doomed:
            await task.abort()
            tasks.append(task)
    async with run_worker(worker):
        with anyio.fail_after(30):
            batch: list[Task[Any, Any]] = []
            batch += [work.enqueue(n) for n in range(300)]
            batch += [flaky.enqueue(n) for n in range(100)]
            batch += [
                work.enqueue(n).start(delay=timedelta(milliseconds=50 + n)) for n in range(100)
            ]
            batch += [single.enqueue(n) for n in range(20)]
            await worker.enqueue_many(batch)
            tasks += batch
            for n in range(60):
                chain: Task[Any, Any] = work.enqueue(n + 1).then(inc).then(picky)
                tasks.append(await chain.otherwise(fallback))
            for n in range(50):
                tasks.append(await inc.enqueue(n).start(after=[batch[n].id, batch[n + 1].id]))
            running = [await blocker.enqueue(n) for n in range(10)]
            sched = await repeated.enqueue().start(schedule=EVERY_SECOND)
            await cron_twice.wait()
            for task in running:
                assert await task.abort()
            await sched.result()
            assert await sched.unschedule()
            for task in [*tasks, *running, sched]:
                await task.result()
    # a cron firing may be queued as the worker stopped: a worker without the cron job drains it
    drain = worker_factory(concurrency=32)
    _register(drain, [], None)
    drain.burst = True
    with anyio.fail_after(20):
        await drain.run_async()
    assert len(cron_runs) >= 2
    assert leftovers(redis_url, clean_queue) == []
