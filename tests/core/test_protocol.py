"""The delivery protocol where production breaks it: leases of prefetched messages, reused ids,
ownership of outcomes, reclaim cursors, stranded deliveries, lost wake-ups and aborts.

Executions are counted, not only results: on a healthy worker every task runs exactly once.
Server functions are also called directly (``worker._client.functions``) where a worker could only
reach a state by luck of timing.
"""

from __future__ import annotations

import collections
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq._codec import encode_fields
from streaq._inspect import inspect_worker
from streaq._library import Arg, QueueFunctions
from streaq.task import Task, TaskStatus
from streaq.types import StreaqCancelled, StreaqError
from streaq.utils import now_ms

from ._support import RunWorker, WorkerFactory, wait_for_status, wait_until

pytestmark = pytest.mark.anyio


async def _execute(worker: Worker[Any], *args: Any) -> Any:
    return await worker._client.redis.execute(*args)


async def _pending(worker: Worker[Any], priority: str = "normal") -> list[Any]:
    stream = worker.keys.stream(priority)
    reply: list[Any] = await _execute(worker, "XPENDING", stream, "g", "-", "+", 1000)
    return reply


# leases of prefetched messages


async def test_prefetched_tasks_longer_than_idle_timeout_run_once(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """concurrency=1 and prefetch: the claimed-but-not-started message waits longer than
    idle_timeout and must keep its lease (it was reclaimed by the worker itself and ran twice)."""
    worker = worker_factory(concurrency=1, idle_timeout=1)
    runs: collections.Counter[int] = collections.Counter()
    running = [0, 0]  # now, peak

    @worker.task
    async def long(n: int) -> int:
        runs[n] += 1
        running[0] += 1
        running[1] = max(running)
        await anyio.sleep(1.6)
        running[0] -= 1
        return n

    async with worker:
        tasks = [await long.enqueue(n) for n in range(3)]
    async with run_worker(worker):
        with anyio.fail_after(20):
            await wait_for_status(tasks[0], TaskStatus.RUNNING)
            # the second is claimed (prefetched) but not started: it is queued, not running
            await wait_until(lambda: _claimed(worker, 2))
            assert await tasks[1].status() == TaskStatus.QUEUED
            results = [await t.result() for t in tasks]
    assert [r.result for r in results] == [0, 1, 2]
    assert [r.tries for r in results] == [1, 1, 1]
    assert runs == {0: 1, 1: 1, 2: 1}
    assert running[1] == 1


async def _claimed(worker: Worker[Any], count: int) -> bool:
    return len(await _pending(worker)) == count


async def test_own_messages_are_never_taken_over(worker: Worker[Any]) -> None:
    """The reclaim function returns a consumer's own idle messages apart, never as taken over."""
    async with worker:
        functions = worker._client.functions
        stream = worker.keys.stream("normal")
        await _execute(worker, "XADD", stream, "*", "i", "t1", "f", "x", "d", b"", "c", 0)
        await _execute(worker, "XREADGROUP", "GROUP", "g", "me", "COUNT", 1, "STREAMS", stream, ">")
        await anyio.sleep(0.05)
        taken, own, _ = await functions.reclaim("me", 10, 10, [("normal", "-")])
        assert taken == []
        assert [bytes(entry[1]).decode() for entry in own] == [
            bytes(p[0]).decode() for p in await _pending(worker)
        ]
        # its idle time was reset: the same call a moment later finds nothing idle
        taken, own, _ = await functions.reclaim("me", 1000, 10, [("normal", "-")])
        assert taken == own == []
        await anyio.sleep(0.05)
        taken, own, _ = await functions.reclaim("other", 10, 10, [("normal", "-")])
        assert len(taken) == 1
        assert own == []
        assert bytes((await _pending(worker))[0][1]).decode() == "other"


async def test_reclaim_reaches_idle_messages_behind_many_live_ones(worker: Worker[Any]) -> None:
    """XAUTOCLAIM from 0-0 examined 10 x COUNT entries and stopped there, every time."""
    async with worker:
        functions = worker._client.functions
        stream = worker.keys.stream("normal")
        for n in range(300):
            await _execute(worker, "XADD", stream, "*", "i", f"live{n}", "f", "x", "d", b"", "c", 0)
        await _execute(worker, "XREADGROUP", "GROUP", "g", "alive", "STREAMS", stream, ">")
        for n in range(5):
            await _execute(worker, "XADD", stream, "*", "i", f"dead{n}", "f", "x", "d", b"", "c", 0)
        await _execute(worker, "XREADGROUP", "GROUP", "g", "dead", "STREAMS", stream, ">")
        await anyio.sleep(0.2)
        # the live consumer renews its leases (its idle time is reset)
        live = [bytes(p[0]).decode() for p in await _pending(worker) if p[1] == b"alive"]
        await _execute(worker, "XCLAIM", stream, "g", "alive", 0, *live, "JUSTID")
        taken: list[Any] = []
        cursors = [("normal", "-")]
        for _ in range(5):
            got, _own, nxt = await functions.reclaim("me", 100, 2, cursors)
            taken += got
            cursors = [("normal", nxt[0])]
        ids = sorted(bytes(entry[2][entry[2].index(b"i") + 1]).decode() for entry in taken)
        assert ids == [f"dead{n}" for n in range(5)]


# reused task ids


async def test_a_live_id_is_never_overwritten(worker: Worker[Any], run_worker: RunWorker) -> None:
    runs: list[str] = []

    @worker.task
    async def note(tag: str) -> str:
        runs.append(tag)
        return tag

    async with worker:
        delayed = note.enqueue("delayed").start(delay=1)
        delayed.id = "fixed-id"
        await delayed
        again = note.enqueue("again")
        again.id = "fixed-id"
        with pytest.raises(StreaqError, match="fixed-id"):
            await again
        # the other order: queued first, then the same id delayed
        queued = note.enqueue("queued")
        queued.id = "other-id"
        await queued
        later = note.enqueue("later").start(delay=1)
        later.id = "other-id"
        with pytest.raises(StreaqError, match="other-id"):
            await later
        # two tasks of one batch with one id: nothing is written
        first, second = note.enqueue("a"), note.enqueue("b")
        first.id = second.id = "batch-id"
        with pytest.raises(StreaqError, match="batch-id"):
            await worker.enqueue_many([first, second])
        assert await worker.status_by_id("batch-id") == TaskStatus.NOT_FOUND
    async with run_worker(worker):
        with anyio.fail_after(10):
            assert (await delayed.result()).result == "delayed"
            assert (await queued.result()).result == "queued"
            # a finished task's id may be used again: it runs again, with a new result
            reused = note.enqueue("reused")
            reused.id = "fixed-id"
            await reused
            assert (await reused.result()).result == "reused"
    assert sorted(runs) == ["delayed", "queued", "reused"]


async def test_a_task_after_its_own_id_is_refused(worker: Worker[Any]) -> None:
    """Found by the model-based test (tests/stateful, seed 11 on asyncio): a finished task's id
    given again with ``after=`` that same id. The enqueue deleted the old result before it looked
    at the dependency, so the new task ran although the task it was to follow had failed."""

    @worker.task
    async def note(tag: str) -> str:
        return tag

    async with worker:
        first = note.enqueue("first").start(delay=60)
        first.id = "self-id"
        await first
        assert await first.abort()
        failed = await first.result(timeout=5)
        assert isinstance(failed.exception, StreaqCancelled)
        again = note.enqueue("again").start(after="self-id")
        again.id = "self-id"
        with pytest.raises(StreaqError, match="self-id"):
            await again
        # nothing was written: the old result is still there
        assert await worker.status_by_id("self-id") == TaskStatus.DONE
        assert isinstance((await first.result(timeout=5)).exception, StreaqCancelled)


async def test_index_states_that_disagree_do_not_stop_the_worker(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    """A delayed-set entry whose index entry says queued (the state a reused id used to leave)
    and an index entry that is not even msgpack: the scheduler skips them and goes on."""
    runs: list[str] = []

    @worker.task
    async def note(tag: str) -> str:
        runs.append(tag)
        return tag

    async with worker:
        queued = await note.enqueue("queued")
        await _execute(worker, "ZADD", f"{worker.keys.prefix}z", 0, queued.id)
        await _execute(worker, "HSET", f"{worker.keys.prefix}t", "garbage", b"\xc1\xc1")
        await _execute(worker, "ZADD", f"{worker.keys.prefix}z", 0, "garbage")
    async with run_worker(worker):
        with anyio.fail_after(10):
            assert (await queued.result()).result == "queued"
            later = await note.enqueue("later").start(delay=timedelta(milliseconds=200))
            assert (await later.result()).result == "later"
            assert await worker.status_by_id("garbage") == TaskStatus.NOT_FOUND
            # aborting the unreadable entry frees its id
            assert await worker.abort_by_id("garbage") is False
            assert await _execute(worker, "HEXISTS", f"{worker.keys.prefix}t", "garbage") == 0
    assert runs == ["queued", "later"]


# outcomes: only the owner applies them, once


async def test_finish_applies_only_for_the_owner_and_only_once(worker: Worker[Any]) -> None:
    async with worker:
        functions = worker._client.functions
        stream = worker.keys.stream("normal")

        @worker.task
        async def work(n: int) -> int:
            return n

        task = await work.enqueue(1)
        await _execute(worker, "XREADGROUP", "GROUP", "g", "w1", "STREAMS", stream, ">")
        msgid = bytes((await _pending(worker))[0][0]).decode()
        info = await task.info()
        assert info is not None
        fields = await _execute(worker, "XRANGE", stream, msgid, msgid)
        retry: list[Arg] = ["y", encode_fields(fields[0][1]), now_ms() + 60_000, ""]
        group: list[Arg] = [task.id, "normal", msgid, *retry]
        # not the owner: skipped, nothing changes
        assert await functions.finish("w2", now_ms(), [], group) == (0, 0, 1)
        assert await task.status() == TaskStatus.QUEUED
        # the owner: the retry is placed once; the same call again is a no-op
        assert await functions.finish("w1", now_ms(), [], group) == (0, 0, 0)
        assert await functions.finish("w1", now_ms(), [], group) == (0, 0, 1)
        assert await task.status() == TaskStatus.SCHEDULED
        assert await _execute(worker, "ZCARD", f"{worker.keys.prefix}z") == 1
        assert await _execute(worker, "XLEN", stream) == 0


async def test_a_lost_lease_frees_its_slot(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """Messages taken over by another consumer while held (running and prefetched) are dropped
    by their worker, which goes on claiming: no capacity slot leaks."""
    worker = worker_factory(concurrency=1, prefetch=1, idle_timeout=1)
    started = anyio.Event()
    runs: collections.Counter[str] = collections.Counter()

    @worker.task
    async def blocker(tag: str) -> str:
        runs[tag] += 1
        if tag.startswith("block"):
            started.set()
            await anyio.sleep(60)
        return tag

    async with run_worker(worker):
        with anyio.fail_after(15):
            running = await blocker.enqueue("block")
            await started.wait()
            prefetched = await blocker.enqueue("block2")
            await wait_until(lambda: _claimed(worker, 2))
            stream = worker.keys.stream("normal")
            msgids = [bytes(p[0]).decode() for p in await _pending(worker)]
            # another worker takes both over (as after an outage longer than idle_timeout)
            await _execute(worker, "XCLAIM", stream, "g", "thief", 0, *msgids, "JUSTID")

            async def dropped() -> bool:
                state = worker._run.state
                return worker.running() == 0 and state is not None and not state.jobs

            await wait_until(dropped)
            after = await blocker.enqueue("after")
            assert (await after.result()).result == "after"
            # the thief owns the two: their outcome is not this worker's to write
            assert await running.status() == TaskStatus.RUNNING
            assert await prefetched.status() == TaskStatus.QUEUED
    assert runs == {"block": 1, "after": 1}


# deliveries whose reply never arrived


async def test_a_delivery_the_worker_never_received_runs_once(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """A read whose reply is lost leaves the message in the worker's own pending list: the
    worker's reclaimer takes it once idle; a stopping worker hands it back at once."""
    worker = worker_factory(idle_timeout=1, id="stranded-worker")
    runs: collections.Counter[str] = collections.Counter()

    @worker.task
    async def note(tag: str) -> str:
        runs[tag] += 1
        return tag

    stream = worker.keys.stream("normal")
    async with worker:
        stranded = await note.enqueue("stranded")
        # delivered to the worker's consumer, as a read that lost its reply would
        await _execute(worker, "XREADGROUP", "GROUP", "g", worker.id, "STREAMS", stream, ">")
    async with run_worker(worker):
        with anyio.fail_after(10):
            assert (await stranded.result()).result == "stranded"
    assert runs == {"stranded": 1}

    # and at shutdown: handed back for another worker, without waiting for idle_timeout
    async with worker:
        handed = await note.enqueue("handed")
        await _execute(worker, "XREADGROUP", "GROUP", "g", worker.id, "STREAMS", stream, ">")
    async with run_worker(worker_factory(idle_timeout=60, id="stranded-worker")):
        pass
    other = worker_factory(idle_timeout=60)
    other.registry.update(worker.registry)
    async with run_worker(other):
        with anyio.fail_after(10):
            assert (await other.result_by_id(handed.id)).result == "handed"
    assert runs == {"stranded": 1, "handed": 1}


async def test_a_stopped_worker_leaves_no_consumer_or_heartbeat(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task
    async def work() -> None:
        pass

    async with run_worker(worker):
        with anyio.fail_after(10):
            await (await work.enqueue()).result()
    async with worker:
        stream = worker.keys.stream("normal")
        assert await _execute(worker, "XINFO", "CONSUMERS", stream, "g") == []
        assert await _execute(worker, "HLEN", worker.keys.workers) == 0


async def test_gone_workers_are_pruned(worker: Worker[Any]) -> None:
    async with worker:
        stream = worker.keys.stream("normal")
        functions = worker._client.functions
        await _execute(worker, "XGROUP", "CREATECONSUMER", stream, "g", "ghost")
        await _execute(worker, "HSET", worker.keys.workers, "ancient", now_ms() - 7_200_000)
        await _execute(worker, "HSET", worker.keys.workers, "recent", now_ms())
        await anyio.sleep(0.2)
        deleted, forgotten = await functions.prune(now_ms(), 100, 3_600_000, ["normal"])
        assert (deleted, forgotten) == (1, 1)
        assert await _execute(worker, "XINFO", "CONSUMERS", stream, "g") == []
        assert await _execute(worker, "HKEYS", worker.keys.workers) == [b"recent"]


# wake-ups and aborts that arrive at the wrong moment


async def test_a_wake_up_during_promote_is_not_lost(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    """A delayed task enqueued while the scheduler's promote call is in flight: its wake-up
    must not be consumed by an event the scheduler replaces afterwards (it slept 60 s)."""

    @worker.task
    async def note() -> str:
        return "ran"

    holder: list[Task[Any, str]] = []

    class Functions(QueueFunctions):
        """The real functions; the first promote call sees a task enqueued while it runs."""

        async def promote(self, now: int, limit: int) -> tuple[int, int]:
            result = await super().promote(now, limit)
            if not holder:
                # its wake-up is published while this call is busy
                holder.append(await note.enqueue().start(delay=timedelta(milliseconds=300)))
            return result

    async with worker:
        client = worker._client
        client.functions = Functions(client.redis, worker.keys.prefix)
        async with run_worker(worker):
            with anyio.fail_after(10):
                await wait_until(lambda: _truthy(holder))
                assert (await holder[0].result()).result == "ran"


async def _truthy(value: list[Any]) -> bool:
    return bool(value)


async def test_an_abort_published_while_unsubscribed_is_applied(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    started = anyio.Event()

    @worker.task
    async def forever() -> None:
        started.set()
        await anyio.sleep(60)

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await forever.enqueue()
            await started.wait()
            # the abort request whose publication the worker missed
            await _execute(worker, "SADD", worker.keys.abort_set, task.id)
            # the subscription drops and comes back (on the server holding the queue)
            node = redis.Redis.from_url(redis_url)
            try:
                node.client_kill_filter(_type="pubsub")
            finally:
                node.close()
            result = await task.result()
    assert isinstance(result.exception, StreaqCancelled)


# sync tasks


async def test_sync_concurrency_counts_abandoned_threads(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """A sync task that times out leaves its thread running (threads cannot be stopped): that
    thread keeps its slot of sync_concurrency until it ends."""
    worker = worker_factory(concurrency=4, sync_concurrency=1)
    lock = threading.Lock()
    threads = [0, 0]  # now, peak

    @worker.task(timeout=timedelta(milliseconds=200))
    def stubborn(n: int) -> int:
        with lock:
            threads[0] += 1
            threads[1] = max(threads)
        time.sleep(0.6)
        with lock:
            threads[0] -= 1
        return n

    async with run_worker(worker):
        with anyio.fail_after(15):
            tasks = [await stubborn.enqueue(n) for n in range(3)]
            results = [await t.result() for t in tasks]
            assert all(isinstance(r.exception, TimeoutError) for r in results)

            async def all_ended() -> bool:
                return threads[0] == 0

            await wait_until(all_ended)
    assert threads[1] == 1


# Redis errors that are not outages


async def test_a_duty_failing_on_an_error_reply_keeps_the_worker_serving(
    worker: Worker[Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """The delayed set holding the wrong type makes every promote call fail (WRONGTYPE): the
    scheduler logs it and retries with a backoff, the other duties go on, and once the key is
    repaired delayed tasks run again."""

    @worker.task
    async def note(tag: str) -> str:
        return tag

    delayed_set = f"{worker.keys.prefix}z"
    async with worker:
        await _execute(worker, "SET", delayed_set, "not a sorted set")
    async with run_worker(worker):
        with anyio.fail_after(15):
            assert (await (await note.enqueue("plain")).result()).result == "plain"

            async def logged() -> bool:
                return "the scheduler of worker" in caplog.text

            await wait_until(logged)
            await _execute(worker, "DEL", delayed_set)
            later = await note.enqueue("later").start(delay=timedelta(milliseconds=100))
            assert (await later.result()).result == "later"


async def test_info_tells_prefetched_from_running(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=1, prefetch=1)
    release = anyio.Event()

    @worker.task
    async def gated(n: int) -> int:
        await release.wait()
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            tasks = [await gated.enqueue(n) for n in range(3)]
            await wait_for_status(tasks[0], TaskStatus.RUNNING)
            await wait_until(lambda: _claimed(worker, 2))
            found = await inspect_worker(worker)
            assert (found.queued, found.prefetched, found.running) == (1, 1, 1)
            release.set()
            for task in tasks:
                await task.result()


async def test_finish_when_a_worker_holds_very_many_messages(worker: Worker[Any]) -> None:
    """Past 1,000 held messages ownership is checked message by message: still only once."""
    async with worker:
        functions = worker._client.functions
        stream = worker.keys.stream("normal")
        redis = worker._client.redis
        await redis.pipeline(
            [["XADD", stream, "*", "i", f"t{n}", "f", "x", "d", b"", "c", 0] for n in range(1001)]
        )
        await redis.execute("XREADGROUP", "GROUP", "g", "w1", "STREAMS", stream, ">")
        msgid = bytes((await _pending(worker))[0][0]).decode()
        record = b"\x99\xa1x\x00\x00\x00\x00\x00\x00\xa0\xc0"
        group: list[Arg] = ["t0", "normal", msgid, "r", record, 1000, ""]
        assert await functions.finish("w1", now_ms(), [], [*group, *group]) == (1, 0, 1)
        assert await functions.finish("w2", now_ms(), [], group) == (0, 0, 1)
        assert await redis.execute("XLEN", stream) == 1000
