"""Failed tasks after the fact (``streaq._failed``): their call is kept as long as their result,
they can be retried under their id or have their result deleted; finished tasks list newest
first; workers report host, pid, backend, concurrency and running tasks with their heartbeat."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis

from streaq import TaskStatus, Worker
from streaq._signing import SignatureError
from streaq.types import StreaqError

from ._support import RunWorker, WorkerFactory, wait_for_status, wait_until

pytestmark = pytest.mark.anyio


def register(worker: Worker[Any], fails: list[int]) -> Any:
    """``flaky(n, tag=...)`` fails while ``fails`` holds a number, then returns ``n``."""

    @worker.task(ttl=timedelta(minutes=10))
    async def flaky(n: int, *, tag: str = "") -> int:
        if fails:
            fails.pop()
            raise ValueError(f"flaky {n} {tag}")
        return n

    @worker.task(ttl=0)
    async def unstored(n: int) -> None:
        raise ValueError(n)

    @worker.task
    async def sleeper(seconds: float) -> None:
        await anyio.sleep(seconds)

    return flaky, unstored, sleeper


def pttl(redis_url: str, key: str) -> int:
    """The key's time to live in ms (-2: no key, -1: no expiry)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.pttl(key))
    finally:
        client.close()


async def test_a_failed_task_keeps_its_call_as_long_as_its_result(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    flaky, unstored, sleeper = register(worker, [1])
    async with run_worker(worker):
        with anyio.fail_after(15):
            failed = await flaky.enqueue(7, tag="x")
            assert not (await failed.result()).success
            assert await worker.arguments_by_id(failed.id) == ((7,), {"tag": "x"})
            kept = pttl(redis_url, worker.keys.failed_call(failed.id))
            assert 0 < kept <= 600_000  # the task's ttl, like its result
            ok = await flaky.enqueue(8)
            assert (await ok.result()).success
            assert await worker.arguments_by_id(ok.id) is None  # success keeps nothing
            # a result that is only published keeps no call either (aborted while delayed: no
            # need to catch the published result, which only listeners at that moment get)
            gone = await unstored.enqueue(9).start(delay=3600)
            assert await gone.abort()
            assert await worker.arguments_by_id(gone.id) is None
            # failures the server decides: an abort before the start, a failed dependency
            later = await sleeper.enqueue(1).start(delay=3600)
            child = await sleeper.enqueue(2).start(after=later.id)
            assert await later.abort()
            assert not (await child.result()).success
            assert await worker.arguments_by_id(later.id) == ((1,), {})
            assert await worker.arguments_by_id(child.id) == ((2,), {})
            # an unfinished task's arguments come from the task itself
            waiting = await sleeper.enqueue(3).start(delay=3600)
            assert await worker.arguments_by_id(waiting.id) == ((3,), {})
            await waiting.abort()


async def test_retry_queues_a_failed_task_again_under_its_id(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    fails = [1]
    flaky, _, sleeper = register(worker, fails)
    async with run_worker(worker):
        with anyio.fail_after(15):
            task = await flaky.enqueue(5, tag="again")
            first = await task.result()
            assert not first.success
            assert await worker.retry_by_id(task.id)
            second = await task.result()
            assert second.success
            assert second.result == 5
            assert second.tries == 1  # a fresh start
            assert await worker.arguments_by_id(task.id) is None  # it succeeded this time
            assert not await worker.retry_by_id(task.id)  # nothing failed to retry
            assert not await worker.retry_by_id("no-such-task")
            # a live task cannot be retried, nor its result deleted
            long = await sleeper.enqueue(30)
            await wait_for_status(long, TaskStatus.RUNNING)
            with pytest.raises(StreaqError, match="cannot be retried"):
                await worker.retry_by_id(long.id)
            with pytest.raises(StreaqError, match="abort it instead"):
                await worker.delete_by_id(long.id)
            await long.abort()


async def test_delete_removes_the_result_and_the_kept_call(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    flaky, _, _ = register(worker, [1])
    async with run_worker(worker):
        with anyio.fail_after(15):
            task = await flaky.enqueue(1)
            await task.result()
            assert await worker.delete_by_id(task.id)
            assert await task.status() == TaskStatus.NOT_FOUND
            assert pttl(redis_url, worker.keys.failed_call(task.id)) == -2
            assert not await worker.delete_by_id(task.id)
            assert not await worker.retry_by_id(task.id)


async def test_a_kept_call_is_verified_before_it_is_shown_or_signed_again(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str
) -> None:
    worker = worker_factory(signing_secret="a signing secret", encryption_key="an encryption key")
    fails = [1, 1]
    flaky, _, _ = register(worker, fails)
    async with run_worker(worker):
        with anyio.fail_after(15):
            task = await flaky.enqueue(3, tag="secret-tag")
            await task.result()
            key = worker.keys.failed_call(task.id)
            client = redis.Redis.from_url(redis_url)
            try:
                stored = client.get(key)
                assert stored is not None
                assert b"secret-tag" not in stored  # encrypted at rest, as in the stream
                assert await worker.arguments_by_id(task.id) == ((3,), {"tag": "secret-tag"})
                assert await worker.retry_by_id(task.id)  # verified, signed afresh, run
                assert not (await task.result()).success  # the second failure
                # someone with write access to Redis swaps the function name
                stored = client.get(key)
                assert isinstance(stored, bytes)
                client.set(key, stored.replace(b"flaky", b"flakz"), px=60_000)
            finally:
                client.close()
            with pytest.raises(SignatureError):
                await worker.arguments_by_id(task.id)
            with pytest.raises(SignatureError):
                await worker.retry_by_id(task.id)


async def test_finished_tasks_come_newest_first(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=1)  # one at a time: finish times follow the order
    fails: list[int] = []
    flaky, _, _ = register(worker, fails)
    async with run_worker(worker):
        with anyio.fail_after(15):
            ids = []
            for n in range(6):
                if n % 2:
                    fails.append(1)
                task = await flaky.enqueue(n)
                await task.result()
                ids.append(task.id)
                await anyio.sleep(0.002)  # distinct finish times (ms)
            listed = await worker.finished_tasks(limit=10)
            assert [r.task_id for r in listed] == ids[::-1]
            page = await worker.finished_tasks(limit=2, offset=1)
            assert [r.task_id for r in page] == ids[::-1][1:3]
            failed = await worker.finished_tasks(failed_only=True)
            assert [r.task_id for r in failed] == [ids[5], ids[3], ids[1]]
            assert all(not r.success for r in failed)
            assert await worker.finished_tasks(limit=0) == []
            with pytest.raises(ValueError, match="negative"):
                await worker.finished_tasks(offset=-1)


async def test_workers_report_themselves_with_their_heartbeat(
    worker_factory: WorkerFactory, run_worker: RunWorker, backend_name: str
) -> None:
    worker = worker_factory(concurrency=3, idle_timeout=1)
    _, _, sleeper = register(worker, [])
    async with run_worker(worker):
        with anyio.fail_after(15):
            long = await sleeper.enqueue(30)
            await wait_for_status(long, TaskStatus.RUNNING)

            async def reported() -> bool:
                beats = (await worker.inspect()).workers
                return bool(beats) and long.id in beats[0].running

            await wait_until(reported, 0.05)
            [beat] = (await worker.inspect()).workers
            assert beat.id == worker.id
            assert beat.host == socket.gethostname()
            assert beat.pid == os.getpid()
            assert beat.backend is not None
            assert beat.backend.startswith(backend_name)
            assert beat.concurrency == 3
            assert beat.running_count == 1
            assert beat.started_ms is not None
            assert beat.started_ms <= beat.last_beat_ms
            await long.abort()
    # a stopped worker takes its report with it
    assert (await worker.inspect()).workers == []


async def test_task_info_names_the_crontab_of_a_repeating_task(worker: Worker[Any]) -> None:
    _, _, sleeper = register(worker, [])
    async with worker:
        repeating = await sleeper.enqueue(0).start(schedule="0 0 1 1 *")
        once = await sleeper.enqueue(0).start(delay=3600)
        info = await repeating.info()
        assert info is not None
        assert info.crontab == "0 0 1 1 *"
        info = await once.info()
        assert info is not None
        assert info.crontab is None
        await repeating.unschedule()
        await once.abort()


async def test_heartbeats_without_a_report_still_read(worker: Worker[Any], redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        async with worker:
            now = (await worker.inspect()).now_ms
            # a worker of an older streaq: a plain heartbeat; another with an unreadable report
            client.hset(worker.keys.workers, mapping={"old": now, "odd": now - 1})
            client.set(worker.keys.worker_info("odd"), b"not json", px=60_000)
            beats = {b.id: b for b in (await worker.inspect()).workers}
    finally:
        client.close()
    for name in ("old", "odd"):
        assert beats[name].alive
        assert beats[name].host is None
        assert beats[name].running == ()
