"""``unique=True`` as in streaq 7.2: one running instance; another that starts meanwhile fails."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.task import TaskStatus
from streaq.types import StreaqCancelled, StreaqError, StreaqRetry

from ._support import RunWorker, wait_for_status

pytestmark = pytest.mark.anyio


async def test_second_instance_fails_while_one_runs(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    runs: list[int] = []
    started = anyio.Event()
    release = anyio.Event()

    @worker.task(unique=True, timeout=30)
    async def singleton(n: int) -> int:
        runs.append(n)
        started.set()
        await release.wait()
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await singleton.enqueue(1)
            await started.wait()
            await wait_for_status(first, TaskStatus.RUNNING)
            second = await singleton.enqueue(2)
            failed = await second.result()
            assert not failed.success
            assert isinstance(failed.exception, StreaqError)
            assert "unique" in str(failed.exception)
            release.set()
            assert (await first.result()).result == 1
            # the lock went with the first run's end: a new instance runs
            third = await singleton.enqueue(3)
            assert (await third.result()).result == 3
    assert runs == [1, 3]


@pytest.mark.parametrize("ending", ["failure", "timeout", "abort", "retry"])
async def test_lock_released_however_the_run_ends(
    worker: Worker[Any], run_worker: RunWorker, ending: str
) -> None:
    started = anyio.Event()
    tries: list[int] = []

    @worker.task(unique=True, timeout=1 if ending == "timeout" else 30, max_tries=2)
    async def singleton(n: int) -> int:
        if n == 0:
            tries.append(singleton.context.tries)
            started.set()
            if ending == "failure":
                raise ValueError("boom")
            if ending == "retry" and singleton.context.tries == 1:
                raise StreaqRetry(delay=0)
            if ending != "retry":
                await anyio.sleep(60)
        return n

    async with run_worker(worker):
        with anyio.fail_after(15):
            first = await singleton.enqueue(0)
            await started.wait()
            if ending == "abort":
                assert await first.abort() is True
            result = await first.result()
            assert result.success is (ending == "retry")
            if ending == "abort":
                assert isinstance(result.exception, StreaqCancelled)
            if ending == "retry":
                assert tries == [1, 2]
            again = await singleton.enqueue(1)
            assert (await again.result()).result == 1


async def test_lock_of_a_vanished_holder_is_taken_over(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task(unique=True, timeout=30)
    async def singleton() -> str:
        return "ran"

    async with run_worker(worker):
        # a holder that is no live task (its record gone): the lock does not block anyone
        lock = f"{worker.keys.prefix}u:{singleton.fn_name}"
        await worker._client.redis.execute("SET", lock, "no-such-task", "PX", 60_000)
        with anyio.fail_after(10):
            task = await singleton.enqueue()
            assert (await task.result()).result == "ran"
        assert await worker._client.redis.execute("EXISTS", lock) == 0


async def test_unique_needs_a_timeout(worker: Worker[Any]) -> None:
    with pytest.raises(StreaqError, match="needs a timeout"):

        @worker.task(unique=True)
        async def singleton() -> None: ...

    with pytest.raises(StreaqError, match="needs a timeout"):

        @worker.cron("* * * * *", timeout=None)
        async def ticker() -> None: ...


async def test_lock_of_a_dead_workers_run_is_free(worker: Worker[Any]) -> None:
    """The holder's message is claimed by a worker that stopped renewing its lease (it died):
    the lock does not block the next instance until the holder is reclaimed."""

    @worker.task(unique=True, timeout=30)
    async def singleton() -> None: ...

    stream = worker.keys.stream("normal")
    async with worker:
        holder = await singleton.enqueue()
        redis = worker._client.redis
        functions = worker._client.functions
        await redis.execute("XREADGROUP", "GROUP", "g", "dead", "STREAMS", stream, ">")
        assert await functions.unique(singleton.fn_name, holder.id, 60_000, 1000)
        # while the holder's lease may still be renewed, the lock is taken
        assert not await functions.unique(singleton.fn_name, "next", 60_000, 1000)
        await anyio.sleep(0.3)
        # once its message has been idle longer than the lease, it is not
        assert await functions.unique(singleton.fn_name, "next", 60_000, 200)
        lock = f"{worker.keys.prefix}u:{singleton.fn_name}"
        assert await redis.execute("GET", lock) == b"next"
