"""Poison messages land in the dead-letter stream with their failed result; list, replay, purge."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq.types import StreaqError

from ._support import RunWorker, WorkerFactory, wait_until
from .test_bad_input import _inject, assert_acked

pytestmark = pytest.mark.anyio


async def _dead(worker: Worker[Any], count: int) -> list[Any]:
    """Wait until the queue holds ``count`` dead letters; return them."""

    async def enough() -> bool:
        return len(await worker.dead_letters()) >= count

    await wait_until(enough)
    return await worker.dead_letters()


async def test_unknown_function_is_dead_lettered(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await worker.enqueue_unsafe("nope", 1, x=2)
            res = await task.result()
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "nope" in str(res.exception)
            [letter] = await _dead(worker, 1)
            assert letter.task_id == task.id
            assert letter.fn_name == "nope"
            assert letter.reason.startswith("unknown function")
            assert letter.tries == 1
            assert letter.worker == worker.id
            assert letter.priority == worker.priorities[0]
            assert letter.fields["d"]  # the original payload is kept
            assert letter.to_json()["task_id"] == task.id
            await assert_acked(worker)


async def test_undecodable_payload_is_dead_lettered(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with run_worker(worker):
        with anyio.fail_after(10):
            task_id = await _inject(worker, add.fn_name, b"\xc1garbage")
            res = await worker.result_by_id(task_id)
            assert not res.success
            assert "decode" in str(res.exception)
            [letter] = await _dead(worker, 1)
            assert (letter.task_id, letter.fn_name) == (task_id, add.fn_name)
            assert letter.reason.startswith("undecodable payload")
            assert letter.fields["d"] == b"\xc1garbage"
            # a sound task is not a dead letter, even one failing on its argument types
            bad_types = await add.enqueue("x", 1)  # type: ignore[arg-type]
            assert not (await bad_types.result()).success
            assert (await (await add.enqueue(1, 2)).result()).result == 3
            assert len(await worker.dead_letters()) == 1
            await assert_acked(worker)


async def test_bad_signature_is_dead_lettered(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(signing_secret="secret")

    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with run_worker(worker):
        with anyio.fail_after(10):
            # a payload without the signature of its task
            payload = worker._client.codec.encode_call((1, 2), {})
            task_id = await _inject(worker, add.fn_name, payload)
            res = await worker.result_by_id(task_id)
            assert "signature" in str(res.exception)
            [letter] = await _dead(worker, 1)
            assert letter.reason == "invalid signature"


def _deliver(redis_url: str, stream: str, times: int) -> None:
    """Deliver the stream's message ``times`` times to a consumer that dies each time.

    The last delivery leaves it idle for an hour: the worker's reclaimer takes it over at once.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        reply: Any = client.xreadgroup("g", "ghost", {stream: ">"}, count=1)
        [(_, [(msgid, _)])] = reply
        for n in range(times - 1):
            idle = 3_600_000 if n == times - 2 else None
            client.xclaim(stream, "g", f"ghost{n}", 0, [msgid], idle=idle)
    finally:
        client.close()


async def test_worker_keeps_dying_then_replay(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str
) -> None:
    """Over max_tries deliveries: a dead letter (and a failed result); replay runs it afresh."""
    worker = worker_factory(idle_timeout=1)
    runs: list[int] = []

    @worker.task(max_tries=2)
    async def work(n: int) -> int:
        runs.append(n)
        return n * 10

    @worker.task
    async def after(n: int) -> int:
        return n

    async with worker:
        task = await work.enqueue(7)
        child = await after.enqueue(1).start(after=task.id)
        _deliver(redis_url, worker.keys.stream(worker.priorities[0]), 3)
    async with run_worker(worker):
        with anyio.fail_after(15):
            res = await task.result()
            assert not res.success
            assert "max_tries=2" in str(res.exception)
            assert res.tries == 2
            # its dependents fail with it
            assert not (await child.result()).success
            [letter] = await _dead(worker, 1)
            assert letter.task_id == task.id
            assert letter.reason.startswith("max_tries exceeded: delivered 4 times")
            assert letter.tries == 4
            assert runs == []
            await assert_acked(worker)

            assert await worker.replay_dead_letters([task.id]) == [task.id]
            res = await worker.result_by_id(task.id)
            assert res.success
            assert res.result == 70
            assert res.tries == 1
            assert runs == [7]
            assert await worker.dead_letters() == []
            await assert_acked(worker)


async def test_replay_after_deploying_the_function(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    old = worker_factory()
    new = worker_factory()

    @new.task(name="late")
    async def late(x: int) -> int:
        return x + 1

    async with run_worker(old):
        with anyio.fail_after(10):
            tasks = [await old.enqueue_unsafe("late", n) for n in range(3)]
            for task in tasks:
                assert not (await task.result()).success
            await _dead(old, 3)
    async with run_worker(new):
        with anyio.fail_after(10):
            replayed = await new.replay_dead_letters()
            assert sorted(replayed) == sorted(t.id for t in tasks)
            for n, task in enumerate(tasks):
                assert (await new.result_by_id(task.id)).result == n + 1
            assert await new.dead_letters() == []
            await assert_acked(new)


async def test_list_limit_and_purge(worker: Worker[Any], run_worker: RunWorker) -> None:
    async with run_worker(worker):
        with anyio.fail_after(10):
            tasks = [await worker.enqueue_unsafe("nope", n) for n in range(4)]
            letters = await _dead(worker, 4)
            # oldest first (the order the worker dead-lettered them: it runs several at once)
            ids = [d.task_id for d in letters]
            assert sorted(ids) == sorted(t.id for t in tasks)
            assert [d.task_id for d in await worker.dead_letters(limit=2)] == ids[:2]
            assert await worker.purge_dead_letters([]) == 0
            assert await worker.purge_dead_letters([ids[0], "unknown"]) == 1
            assert [d.task_id for d in await worker.dead_letters()] == ids[1:]
            assert await worker.replay_dead_letters([]) == []
            assert await worker.purge_dead_letters() == 3
            assert await worker.dead_letters() == []
            # the failed results stay
            for task in tasks:
                assert not (await task.result()).success


async def test_streams_trimmed_to_the_acknowledged_point(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    """Finishing a task deletes its entry (XACK + XDEL): the stream holds no entries after."""

    @worker.task(max_tries=2)
    async def work(n: int) -> int:
        if n % 10 == 0:
            raise ValueError(n)
        return n

    async with run_worker(worker):
        with anyio.fail_after(20):
            tasks = [work.enqueue(n) for n in range(300)]
            await worker.enqueue_many(tasks)
            tasks.append(await worker.enqueue_unsafe("nope"))
            for task in tasks:
                await task.result()
            redis_client = worker._client.redis
            stream = worker.keys.stream(worker.priorities[0])
            assert await redis_client.execute("XLEN", stream) == 0
            raw = await redis_client.execute("XINFO", "STREAM", stream)
            items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
            info = {bytes(k).decode(): v for k, v in items}
            assert info["length"] == 0
            assert info["first-entry"] is None
            assert info["last-entry"] is None
            await assert_acked(worker)
