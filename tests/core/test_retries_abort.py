"""Retries, timeouts and aborts."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.types import StreaqCancelled, StreaqError, StreaqRetry

from ._support import RunWorker

pytestmark = pytest.mark.anyio


async def test_retry_until_success(worker: Worker[Any], run_worker: RunWorker) -> None:
    seen: list[int] = []

    @worker.task
    async def flaky() -> int:
        tries = flaky.context.tries
        seen.append(tries)
        if tries < 3:
            raise StreaqRetry("again", delay=0)
        return tries

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await flaky.enqueue()).result()
    assert res.success
    assert res.result == 3
    assert res.tries == 3
    assert seen == [1, 2, 3]
    assert worker.counters["retried"] == 2


async def test_sync_retry(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    def flaky_sync() -> int:
        tries = flaky_sync.context.tries
        if tries < 2:
            raise StreaqRetry(delay=timedelta(0))
        return tries

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await flaky_sync.enqueue()).result()
    assert res.result == 2
    assert res.tries == 2


async def test_retries_run_out(worker: Worker[Any], run_worker: RunWorker) -> None:
    calls: list[int] = []

    @worker.task(max_tries=2)
    async def always_retry() -> None:
        calls.append(always_retry.context.tries)
        raise StreaqRetry("still broken", delay=0)

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await always_retry.enqueue()).result()
    assert not res.success
    assert res.tries == 2
    assert isinstance(res.exception, StreaqError)
    assert "still broken" in str(res.exception)
    assert calls == [1, 2]


async def test_timeout_fails(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(timeout=timedelta(milliseconds=200))
    async def slow() -> None:
        await anyio.sleep_forever()

    @worker.task(timeout=timedelta(milliseconds=200))
    def slow_sync() -> None:
        threading.Event().wait(1)

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await slow.enqueue()).result()
            res_sync = await (await slow_sync.enqueue()).result()
    assert not res.success
    assert isinstance(res.exception, TimeoutError)
    assert res.tries == 1
    assert not res_sync.success
    assert isinstance(res_sync.exception, TimeoutError)


async def test_retry_timeouts(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(timeout=timedelta(milliseconds=200), retry_timeouts=True)
    async def slow_once() -> int:
        if slow_once.context.tries == 1:
            await anyio.sleep_forever()
        return slow_once.context.tries

    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await slow_once.enqueue()).result()
    assert res.success
    assert res.result == 2
    assert res.tries == 2


async def _abort_marks(worker: Worker[Any]) -> list[Any]:
    marks: list[Any] = await worker._client.redis.execute("SMEMBERS", f"{worker.keys.prefix}ab")
    return marks


async def test_abort_queued_without_worker(worker: Worker[Any]) -> None:
    @worker.task
    async def idle() -> None:
        pass

    async with worker:
        task = await idle.enqueue()
        delayed = await idle.enqueue().start(delay=60)
        with anyio.fail_after(2):
            assert await task.abort() is True
            assert await delayed.abort() is True
            res = await task.result()
            res_delayed = await delayed.result()
        assert not res.success
        assert isinstance(res.exception, StreaqCancelled)
        assert isinstance(res_delayed.exception, StreaqCancelled)
        assert await worker.queue_size() == 0
        assert await _abort_marks(worker) == []


async def test_abort_running_async(worker: Worker[Any], run_worker: RunWorker) -> None:
    started = anyio.Event()

    @worker.task
    async def waiting() -> None:
        started.set()
        await anyio.Event().wait()

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await waiting.enqueue()
            await started.wait()
            assert await task.abort() is True
            res = await task.result()
            assert not res.success
            assert isinstance(res.exception, StreaqCancelled)
            assert await _abort_marks(worker) == []
    assert worker.counters["aborted"] == 1


async def test_abort_running_sync(worker: Worker[Any], run_worker: RunWorker) -> None:
    started = threading.Event()
    release = threading.Event()

    @worker.task
    def blocking() -> str:
        started.set()
        release.wait(10)
        return "finished"

    try:
        async with run_worker(worker):
            with anyio.fail_after(10):
                task = await blocking.enqueue()
                await anyio.to_thread.run_sync(started.wait, 5)
                assert await task.abort() is True
                res = await task.result()
                assert not res.success
                assert isinstance(res.exception, StreaqCancelled)
                assert await _abort_marks(worker) == []
    finally:
        release.set()


async def test_abort_finished(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def quick() -> int:
        return 1

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await quick.enqueue()
            assert (await task.result()).result == 1
            assert await task.abort() is False
            assert await worker.abort_by_id("unknown-task") is False
            assert await _abort_marks(worker) == []
