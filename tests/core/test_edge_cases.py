"""Less travelled paths: publish-only results, expiry, aborts of parked tasks, serializers."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.task import TaskStatus
from streaq.types import StreaqCancelled, StreaqError

from ._support import RunWorker, WorkerFactory, wait_for_status, wait_until

pytestmark = pytest.mark.anyio


async def test_ttl_zero_delivers_without_storing(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    release = anyio.Event()

    @worker.task(ttl=0)
    async def fleeting() -> str:
        await release.wait()
        return "gone"

    got: list[str] = []
    async with run_worker(worker):
        task = await fleeting.enqueue()

        async def wait() -> None:
            got.append((await task.result()).result)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)

                async def subscribed() -> bool:
                    # registered *and* the server confirmed the subscription: a record that is
                    # not stored reaches only subscribers, and subscribing takes longer through
                    # Sentinel (master discovery) than on a single server
                    results = worker._client._results
                    return results._started and task.id in results._waiters

                await wait_until(subscribed)
                release.set()
        assert got == ["gone"]
        assert await task.status() == TaskStatus.NOT_FOUND


async def test_ttl_none_keeps_result(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(ttl=None)
    async def kept() -> int:
        return 1

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await kept.enqueue()
            await task.result()
        ttl = await worker._client.redis.execute("PTTL", worker.keys.result(task.id))
        assert ttl == -1


async def test_expired_task(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(expire=timedelta(milliseconds=50))
    async def perishable() -> int:
        return 1

    async with worker:
        task = await perishable.enqueue()
        await anyio.sleep(0.1)  # let the deadline pass before any worker runs
        async with run_worker(worker):
            with anyio.fail_after(10):
                res = await task.result()
    assert not res.success
    assert isinstance(res.exception, StreaqError)
    assert "expired" in str(res.exception)


async def test_abort_fails_dependents(worker: Worker[Any]) -> None:
    @worker.task
    async def parent() -> int:
        return 1

    @worker.task
    async def child(x: int) -> int:
        return x

    async with worker:
        p = await parent.enqueue()
        c = await p.then(child)
        assert await c.status() == TaskStatus.SCHEDULED
        with anyio.fail_after(5):
            assert await p.abort() is True
            rc = await c.result()
        assert isinstance(rc.exception, StreaqError)
        assert "dependency" in str(rc.exception)
        assert await worker.queue_size() == 0


async def test_pickle_serializer(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    worker = worker_factory(serializer=pickle.dumps, deserializer=pickle.loads)

    @worker.task
    async def make_set(n: int) -> frozenset[int]:
        return frozenset(range(n))

    @worker.task
    async def size(s: frozenset[int]) -> int:
        return len(s)

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await make_set.enqueue(3)).result()
            chained = await (make_set.enqueue(4) | size)
            rc = await chained.result()
    assert res.result == frozenset({0, 1, 2})
    assert rc.result == 4


async def test_signed_pipeline(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    worker = worker_factory(signing_secret="s3cret")

    @worker.task
    async def one() -> int:
        return 1

    @worker.task
    async def inc(x: int) -> int:
        return x + 1

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await (one.enqueue() | inc | inc)
            res = await task.result()
    assert res.result == 3


async def test_info_of_running_task(worker: Worker[Any], run_worker: RunWorker) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @worker.task
    async def busy(x: int) -> int:
        started.set()
        await release.wait()
        return x

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await busy.enqueue(5)
            await started.wait()
            await wait_for_status(task, TaskStatus.RUNNING)
            info = await task.info()
            assert info is not None
            assert info.status == TaskStatus.RUNNING
            assert info.tries == 1
            assert info.args == (5,)
            release.set()
            assert (await task.result()).result == 5


async def test_get_tasks_by_status(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def noop(n: int) -> int:
        return n

    async with worker:
        queued = await noop.enqueue(1)
        delayed = await noop.enqueue(2).start(delay=60)
        infos = await worker.get_tasks_by_status(TaskStatus.QUEUED)
        assert [i.task_id for i in infos] == [queued.id]
        scheduled = await worker.get_tasks_by_status(TaskStatus.SCHEDULED)
        assert [i.task_id for i in scheduled] == [delayed.id]
        async with run_worker(worker):
            with anyio.fail_after(10):
                await queued.result()
        done = await worker.get_tasks_by_status(TaskStatus.DONE)
        assert [r.task_id for r in done] == [queued.id]


async def test_abort_prefetched_task(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    """A task claimed but not started yet (prefetched) is aborted without waiting its turn."""
    worker = worker_factory(concurrency=1, prefetch=1)
    started = anyio.Event()
    release = anyio.Event()
    ran: list[int] = []

    @worker.task
    async def slow(n: int) -> int:
        ran.append(n)
        started.set()
        await release.wait()
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await slow.enqueue(1)
            await started.wait()
            second = await slow.enqueue(2)

            stream = worker.keys.stream(worker.priorities[0])

            async def claimed() -> bool:
                pending = await worker._client.redis.execute("XPENDING", stream, "g")
                return int(pending[0]) == 2

            await wait_until(claimed)
            # claimed, not started: prefetched tasks are queued, not running
            assert await second.status() == TaskStatus.QUEUED
            assert await second.abort(timeout=3) is True
            rs = await second.result()
            assert isinstance(rs.exception, StreaqCancelled)
            release.set()
            assert (await first.result()).result == 1
    assert ran == [1]
