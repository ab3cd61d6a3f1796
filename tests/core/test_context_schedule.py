"""Task context, worker context, middlewares, delayed tasks and priorities."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from streaq import TaskContext, Worker
from streaq.task import TaskStatus
from streaq.types import StreaqError
from streaq.utils import now_ms

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio

Call = Callable[..., Coroutine[Any, Any, Any]]


async def test_task_context(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(timeout=30)
    async def async_ctx() -> tuple[str, str, int]:
        ctx = async_ctx.context
        return ctx.fn_name, ctx.task_id, ctx.tries

    @worker.task
    def sync_ctx() -> tuple[str, str, int]:
        ctx = sync_ctx.context
        return ctx.fn_name, ctx.task_id, ctx.tries

    with pytest.raises(StreaqError):
        _ = async_ctx.context
    async with run_worker(worker):
        with anyio.fail_after(10):
            t1 = await async_ctx.enqueue()
            t2 = await sync_ctx.enqueue()
            r1 = await t1.result()
            r2 = await t2.result()
    assert r1.result == (async_ctx.fn_name, t1.id, 1)
    assert r2.result == (sync_ctx.fn_name, t2.id, 1)


async def test_worker_context(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    entered: list[str] = []

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[dict[str, int]]:
        entered.append("enter")
        try:
            yield {"answer": 42}
        finally:
            entered.append("exit")

    worker: Worker[dict[str, int]] = worker_factory(lifespan=lifespan)

    @worker.task
    async def read_async() -> int:
        return worker.context["answer"]

    @worker.task
    def read_sync() -> int:
        return worker.context["answer"] + 1

    with pytest.raises(StreaqError):
        _ = worker.context
    async with run_worker(worker):
        assert worker.context == {"answer": 42}
        with anyio.fail_after(10):
            r1 = await (await read_async.enqueue()).result()
            r2 = await (await read_sync.enqueue()).result()
    assert r1.result == 42
    assert r2.result == 43
    assert entered == ["enter", "exit"]
    with pytest.raises(StreaqError):
        _ = worker.context


async def test_middleware_order_and_context(worker: Worker[Any], run_worker: RunWorker) -> None:
    events: list[str] = []
    contexts: list[TaskContext] = []

    @worker.middleware
    def outer(call: Call) -> Call:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            events.append("outer in")
            contexts.append(outer.context)
            try:
                return await call(*args, **kwargs)
            finally:
                events.append("outer out")

        return wrapper

    @worker.middleware
    def inner(call: Call) -> Call:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            events.append("inner in")
            result = await call(*args, **kwargs)
            events.append("inner out")
            return result * 10

        return wrapper

    @worker.task
    def body(x: int) -> int:
        events.append("task")
        return x

    with pytest.raises(StreaqError):
        _ = outer.context
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await body.enqueue(4)
            res = await task.result()
    assert res.result == 40
    assert events == ["outer in", "inner in", "task", "inner out", "outer out"]
    assert contexts[0].task_id == task.id
    assert contexts[0].fn_name == body.fn_name


async def test_delayed_task(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def later() -> int:
        return now_ms()

    async with worker:
        before = now_ms()
        task = await later.enqueue().start(delay=1)
        assert await task.status() == TaskStatus.SCHEDULED
        info = await task.info()
        assert info is not None
        assert info.status == TaskStatus.SCHEDULED
        assert info.scheduled is not None
        assert await worker.queue_size() == 1
        assert await worker.queue_size(include_scheduled=False) == 0
        async with run_worker(worker):
            with anyio.fail_after(10):
                res = await task.result()
    assert res.result >= before + 1000
    assert res.start_time >= before + 1000


async def test_scheduled_at_datetime(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    def at() -> int:
        return now_ms()

    async with run_worker(worker):
        when = datetime.now(UTC) + timedelta(seconds=1)
        task = await at.enqueue().start(schedule=when)
        assert await task.status() == TaskStatus.SCHEDULED
        with anyio.fail_after(10):
            res = await task.result()
    assert res.result >= int(when.timestamp() * 1000)


async def test_unknown_priority(worker: Worker[Any]) -> None:
    @worker.task
    async def t() -> None:
        pass

    with pytest.raises(StreaqError):
        t.enqueue().start(priority="urgent")


async def test_priorities(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    priorities = ["low", "high"]
    worker = worker_factory(priorities=priorities, concurrency=1, prefetch=0)
    assert priorities == ["low", "high"]
    order: list[str] = []

    @worker.task
    async def record(label: str) -> None:
        order.append(label)

    async with worker:
        lows = [record.enqueue(f"low{n}") for n in range(5)]
        await worker.enqueue_many(lows)
        high = await record.enqueue("high").start(priority="high")
        default = await record.enqueue("default")
        info = await high.info()
        assert info is not None
        assert info.status == TaskStatus.QUEUED
        async with run_worker(worker):
            with anyio.fail_after(10):
                await default.result()
                for task in lows:
                    await task.result()
                await high.result()
    assert order[0] == "high"
    assert order[1:] == [f"low{n}" for n in range(5)] + ["default"]


async def test_sync_concurrency_limit(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    worker = worker_factory(concurrency=4, sync_concurrency=1)
    lock = threading.Lock()
    active = [0, 0]  # current, peak

    @worker.task
    def one_at_a_time() -> None:
        with lock:
            active[0] += 1
            active[1] = max(active)
        threading.Event().wait(0.05)
        with lock:
            active[0] -= 1

    async with run_worker(worker):
        with anyio.fail_after(10):
            tasks = [one_at_a_time.enqueue() for _ in range(4)]
            await worker.enqueue_many(tasks)
            for task in tasks:
                await task.result()
    assert active[1] == 1
