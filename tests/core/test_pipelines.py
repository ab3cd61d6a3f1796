"""Pipelines and dependency graphs: fallbacks of `then` links, failure cascades, TaskInfo links,
listing tasks by status."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.task import Task, TaskInfo, TaskStatus
from streaq.types import StreaqCancelled, StreaqError

from ._support import RunWorker, WorkerFactory, wait_for_status, wait_until

pytestmark = pytest.mark.anyio


def _register(worker: Worker[Any], calls: list[tuple[str, tuple[int, ...]]]) -> Any:
    @worker.task
    async def double(x: int) -> int:
        calls.append(("double", (x,)))
        return 2 * x

    @worker.task
    async def picky(x: int, limit: int = 5) -> int:
        calls.append(("picky", (x, limit)))
        if x > limit:
            raise ValueError(f"{x} > {limit}")
        return x

    @worker.task
    async def rescue(x: int, limit: int = 5) -> int:
        calls.append(("rescue", (x, limit)))
        return -x - limit

    @worker.task
    async def explode(x: int, limit: int = 5) -> int:
        calls.append(("explode", (x, limit)))
        raise RuntimeError("explode")

    return double, picky, rescue, explode


async def test_fallback_of_then_link_gets_parent_result(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []
    double, picky, rescue, explode = _register(worker, calls)
    async with run_worker(worker):
        with anyio.fail_after(10):
            # double(3) = 6 -> picky(6, limit=5) fails -> rescue(6, limit=5) = -11
            failed = await double.enqueue(3).then(picky, limit=5).otherwise(rescue)
            res = await failed.result()
            assert res.success
            assert res.result == -11
            # the link succeeds: the fallback ends with the link's result without running
            fine = await double.enqueue(1).then(picky, limit=5).otherwise(rescue)
            assert (await fine.result()).result == 2
            # two fallbacks in a row: both run with the link's arguments, parent value included
            first: Task[Any, Any] = double.enqueue(4).then(picky, limit=1).otherwise(explode)
            twice: Task[Any, Any] = await first.otherwise(rescue)
            assert (await twice.result()).result == -9
    assert ("rescue", (6, 5)) in calls
    assert ("rescue", (2, 5)) not in calls
    assert ("explode", (8, 1)) in calls
    assert ("rescue", (8, 1)) in calls


async def test_fallback_when_parent_finished_before_enqueue(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []
    double, picky, rescue, _ = _register(worker, calls)
    async with run_worker(worker):
        with anyio.fail_after(10):
            head = await double.enqueue(5)
            assert (await head.result()).result == 10
            tail = await head.then(picky, limit=2).otherwise(rescue)
            res = await tail.result()
            assert res.result == -12
    assert ("rescue", (10, 2)) in calls


async def test_abort_cascades_through_descendants(worker: Worker[Any]) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []
    double, picky, _, _ = _register(worker, calls)
    async with worker:
        a = await double.enqueue(1).start(delay=60)
        b = await picky.enqueue(1).start(after=a.id)
        c = await picky.enqueue(2).start(after=b.id)
        d = await picky.enqueue(3).start(after=[b.id, c.id])
        with anyio.fail_after(5):
            assert await a.abort()
            ra = await a.result()
            assert isinstance(ra.exception, StreaqCancelled)
            for task, parent in ((b, a), (c, b), (d, b)):
                res = await task.result()
                assert not res.success
                assert isinstance(res.exception, StreaqError)
                assert "dependency" in str(res.exception)
                if task is not d:
                    assert parent.id in str(res.exception)
        assert await worker.queue_size() == 0
        # a new dependent of an aborted task fails at once
        e = await picky.enqueue(4).start(after=a.id)
        assert isinstance((await e.result(timeout=5)).exception, StreaqError)
    assert calls == []


async def _info(task: Task[Any, Any]) -> TaskInfo:
    info = await task.info()
    assert info is not None
    return info


async def test_dependency_info_at_every_moment(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=2, prefetch=0)
    gates = {name: anyio.Event() for name in "abcd"}
    started = {name: anyio.Event() for name in "abcd"}

    @worker.task
    async def step(name: str) -> str:
        started[name].set()
        await gates[name].wait()
        return name

    async with worker:
        a = await step.enqueue("a")
        b = await step.enqueue("b").start(after=a.id)
        c = await step.enqueue("c").start(after=b.id)
        d = await step.enqueue("d").start(after=[a.id, b.id])
        assert (await _info(a)).dependencies == set()
        assert (await _info(a)).dependents == {b.id, d.id}
        assert (await _info(b)).dependencies == {a.id}
        assert (await _info(b)).dependents == {c.id, d.id}
        assert (await _info(c)).dependencies == {b.id}
        assert (await _info(d)).dependencies == {a.id, b.id}
        for task in (b, c, d):
            assert (await _info(task)).status == TaskStatus.SCHEDULED
        async with run_worker(worker):
            with anyio.fail_after(10):
                await started["a"].wait()
                await wait_for_status(a, TaskStatus.RUNNING)
                assert (await _info(a)).dependents == {b.id, d.id}
                gates["a"].set()
                await started["b"].wait()
                assert await a.info() is None
                assert (await _info(b)).dependencies == set()
                assert (await _info(b)).dependents == {c.id, d.id}
                assert (await _info(d)).dependencies == {b.id}
                assert (await _info(d)).status == TaskStatus.SCHEDULED
                gates["b"].set()
                await started["c"].wait()
                await started["d"].wait()
                assert await b.info() is None
                for task in (c, d):
                    assert (await _info(task)).dependencies == set()
                    await wait_for_status(task, TaskStatus.RUNNING)
                    assert (await _info(task)).status == TaskStatus.RUNNING
                gates["c"].set()
                gates["d"].set()
                assert [(await t.result()).result for t in (a, b, c, d)] == list("abcd")


async def test_tasks_by_status_exact_limits(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=3, prefetch=0, priorities=["low", "high"])
    release = anyio.Event()
    three = anyio.Event()
    started: list[int] = []

    @worker.task
    async def noop(n: int) -> int:
        return n

    @worker.task
    async def block(n: int) -> int:
        started.append(n)
        if len(started) == 3:
            three.set()
        await release.wait()
        return n

    async with worker:
        queued = [noop.enqueue(n) for n in range(250)]
        high = [noop.enqueue(n).start(priority="high") for n in range(30)]
        delayed = [noop.enqueue(n).start(delay=60) for n in range(150)]
        await worker.enqueue_many([*queued, *high, *delayed])
        waiting = [noop.enqueue(n).start(after=delayed[0].id) for n in range(120)]
        await worker.enqueue_many(waiting)

        async def ids(status: TaskStatus, limit: int, priority: str | None = None) -> set[str]:
            found = await worker.get_tasks_by_status(status, priority=priority, limit=limit)
            assert len(found) <= limit
            return {t.task_id for t in found}

        all_queued = {t.id for t in [*queued, *high]}
        assert await ids(TaskStatus.QUEUED, 1000) == all_queued
        assert len(await ids(TaskStatus.QUEUED, 263)) == 263
        assert await ids(TaskStatus.QUEUED, 1000, "high") == {t.id for t in high}
        assert len(await ids(TaskStatus.QUEUED, 7, "high")) == 7
        all_scheduled = {t.id for t in [*delayed, *waiting]}
        assert await ids(TaskStatus.SCHEDULED, 1000) == all_scheduled
        assert len(await ids(TaskStatus.SCHEDULED, 201)) == 201
        assert await ids(TaskStatus.RUNNING, 1000) == set()
        assert await ids(TaskStatus.DONE, 1000) == set()
        async with run_worker(worker):
            with anyio.fail_after(20):
                for task in [*high, *queued]:
                    await task.result()
                done = await ids(TaskStatus.DONE, 1000)
                assert done == all_queued
                assert len(await ids(TaskStatus.DONE, 111)) == 111
                blocked = [await block.enqueue(n) for n in range(5)]
                await three.wait()

                async def three_running() -> bool:
                    return len(await ids(TaskStatus.RUNNING, 1000)) == 3

                await wait_until(three_running)
                running = await ids(TaskStatus.RUNNING, 1000)
                assert len(running) == 3
                assert running <= {t.id for t in blocked}
                assert await ids(TaskStatus.QUEUED, 1000) == {t.id for t in blocked} - running
                release.set()
                for task in blocked:
                    await task.result()
