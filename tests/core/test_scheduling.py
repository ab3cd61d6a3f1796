"""Scheduling: repeating crontab tasks, unschedule, abort in every state, delayed promotion."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq.task import TaskStatus
from streaq.types import StreaqCancelled

from ._support import RunWorker, WorkerFactory, wait_for_status, wait_until

pytestmark = pytest.mark.anyio

EVERY_SECOND = "* * * * * * *"


def marks(redis_url: str, queue: str) -> tuple[set[Any], list[Any]]:
    """The queue's abort marks and its keys other than streams, index, results (with the kept
    calls of failed tasks and tasks' progress), workers' heartbeats and reports, and the event
    stream."""
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"streaq:{{{queue}}}:"
        aborts = set(client.smembers(prefix + "ab"))
        keys = [
            k
            for k in client.scan_iter(match=prefix + "*", count=1000)
            if not k.decode()[len(prefix) :].startswith(
                ("s:", "r:", "fc:", "pg:", "t", "workers", "w", "ev")
            )
        ]
        return aborts, keys
    finally:
        client.close()


async def test_crontab_task_repeats_until_unscheduled(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str, clean_queue: str
) -> None:
    runs: list[int] = []
    twice = anyio.Event()

    @worker.task
    async def tick(n: int) -> int:
        runs.append(n)
        if len(runs) >= 2:
            twice.set()
        return n * 10

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await tick.enqueue(4).start(schedule=EVERY_SECOND)
            assert await task.status() == TaskStatus.SCHEDULED
            await twice.wait()
            # each run stored its result; the task keeps its id and is scheduled again
            res = await task.result()
            assert res.success
            assert res.result == 40
            await wait_until(lambda: _is(task, TaskStatus.SCHEDULED))
            info = await task.info()
            assert info is not None
            assert info.scheduled is not None
            assert await worker.unschedule_by_id(task.id)
            res = await task.result()
            assert not res.success
            assert isinstance(res.exception, StreaqCancelled)
            assert await task.status() == TaskStatus.DONE
            assert not await task.unschedule()  # not scheduled any more
            count = len(runs)
            assert await worker.queue_size() == 0
        await anyio.sleep(1.2)  # (checking a negative) no further run after unscheduling
    assert len(runs) == count
    assert marks(redis_url, clean_queue) == (set(), [])


async def _true(value: bool) -> bool:
    return value


async def _is(task: Any, status: TaskStatus) -> bool:
    return bool(await task.status() == status)


async def test_unschedule_running_crontab_task(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str, clean_queue: str
) -> None:
    started = anyio.Event()
    runs: list[int] = []

    @worker.task
    async def slow() -> None:
        runs.append(1)
        started.set()
        await anyio.sleep(30)

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await slow.enqueue().start(schedule=EVERY_SECOND)
            await started.wait()
            await wait_for_status(task, TaskStatus.RUNNING)
            assert await worker.unschedule_by_id(task.id)
            res = await task.result()
            assert isinstance(res.exception, StreaqCancelled)
            assert await task.status() == TaskStatus.DONE
    assert runs == [1]
    assert marks(redis_url, clean_queue) == (set(), [])


async def test_unschedule_by_id(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def noop() -> None:
        pass

    async with worker:
        delayed = await noop.enqueue().start(schedule=EVERY_SECOND)
        assert await worker.unschedule_by_id(delayed.id)
        assert isinstance((await delayed.result()).exception, StreaqCancelled)
        assert not await worker.unschedule_by_id("missing")
        assert not await worker.unschedule_by_id(delayed.id)
        queued = await noop.enqueue()
        assert not await worker.unschedule_by_id(queued.id)  # queued, not scheduled
        later = await noop.enqueue().start(delay=60)
        assert await worker.unschedule_by_id(later.id)
        assert isinstance((await later.result()).exception, StreaqCancelled)


async def test_abort_in_every_state(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str, clean_queue: str
) -> None:
    worker = worker_factory(concurrency=4, prefetch=0)
    gate = anyio.Event()
    stop = threading.Event()
    started_async = anyio.Event()
    started_sync = threading.Event()

    @worker.task
    async def hold() -> int:
        started_async.set()
        await gate.wait()
        return 1

    @worker.task
    def sync_hold() -> int:
        started_sync.set()
        stop.wait(20)
        return 2

    @worker.task
    async def add(x: int, y: int = 0) -> int:
        return x + y

    async with worker:
        queued = await add.enqueue(1)
        delayed = await add.enqueue(2).start(delay=60)
        crontab = await add.enqueue(3).start(schedule=EVERY_SECOND)
        waiting = await add.enqueue(4).start(after=delayed.id)
        head = add.enqueue(5).start(delay=60)
        tail = await head.then(add, y=1).then(add, y=2)
        assert await worker.queue_size(include_scheduled=False) == 1
        for task in (queued, waiting, delayed, crontab, tail):
            assert await task.abort(), task
            res = await task.result(timeout=5)
            assert not res.success
            assert isinstance(res.exception, StreaqCancelled)
            assert not await task.abort()
        # the chain's head and middle link are still there; aborting the head fails the middle
        assert await head.status() == TaskStatus.SCHEDULED
        assert await head.abort()
        assert head._triggers is not None
        middle = await head._triggers.result(timeout=5)
        assert not middle.success
        assert "dependency" in str(middle.exception)
    async with run_worker(worker):
        with anyio.fail_after(10):
            running = await hold.enqueue()
            running_sync = await sync_hold.enqueue()
            await started_async.wait()
            await wait_until(lambda: _true(started_sync.is_set()))
            assert await running.abort()
            assert await running_sync.abort()
            stop.set()
            for ran in (running.result(), running_sync.result()):
                assert isinstance((await ran).exception, StreaqCancelled)
    assert marks(redis_url, clean_queue) == (set(), [])
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"streaq:{{{clean_queue}}}:"
        assert client.hlen(prefix + "t") == 0
        assert client.zcard(prefix + "z") == 0
    finally:
        client.close()


async def test_delayed_task_starts_when_due(worker: Worker[Any], run_worker: RunWorker) -> None:
    started = anyio.Event()
    seen: list[float] = []

    @worker.task
    async def noted() -> None:
        seen.append(time.monotonic())
        started.set()

    async with run_worker(worker):
        with anyio.fail_after(10):
            await anyio.sleep(0.2)  # let the scheduler go to sleep on an empty queue
            t0 = time.monotonic()
            await noted.enqueue().start(delay=timedelta(milliseconds=500))
            await started.wait()
    assert 0.45 <= seen[0] - t0 <= 1.5


async def test_sooner_task_wakes_the_scheduler(worker: Worker[Any], run_worker: RunWorker) -> None:
    started = anyio.Event()

    @worker.task
    async def noted(label: str) -> str:
        started.set()
        return label

    async with run_worker(worker):
        with anyio.fail_after(10):
            far = await noted.enqueue("far").start(delay=50)
            await anyio.sleep(0.2)  # the scheduler now sleeps until the far task is due
            t0 = time.monotonic()
            near = await noted.enqueue("near").start(delay=timedelta(milliseconds=300))
            assert (await near.result()).result == "near"
            assert time.monotonic() - t0 <= 1.5
            assert await far.status() == TaskStatus.SCHEDULED
            assert await far.abort()
