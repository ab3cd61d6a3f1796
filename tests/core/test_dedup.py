"""Dedup keys on enqueue (``Dedup.throttle``, ``Dedup.debounce``, ``Dedup.keep_last``): what a
second task of a live key does, that keys are freed however their task ends, and that no task is
lost or run twice when replacements race with workers claiming."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq.task import TaskStatus
from streaq.types import Dedup, DedupOutcome, StreaqCancelled

from ._support import RunWorker, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio


def _dedup_keys(redis_url: str, worker: Worker[Any]) -> dict[str, int]:
    """The queue's dedup records (name -> TTL in ms) and index entries (``ddi`` -> count)."""
    client = redis.Redis.from_url(redis_url)
    try:
        out = {
            bytes(k).decode()[len(worker.keys.prefix) :]: int(client.pttl(k))
            for k in client.scan_iter(match=worker.keys.prefix + "dd:*")
        }
        out["ddi"] = int(client.hlen(worker.keys.dedup_index))
    finally:
        client.close()
    return out


def _superseded(result: Any, by: str) -> bool:
    return (
        not result.success
        and isinstance(result.exception, StreaqCancelled)
        and f"superseded by task {by}" in str(result.exception)
    )


async def test_throttle_drops_while_the_key_is_live(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    runs: list[int] = []

    @worker.task()
    async def sync_user(n: int) -> int:
        runs.append(n)
        return n

    async with worker:
        first = await sync_user.enqueue(1).start(dedup_key="u1", dedup=Dedup.throttle())
        second = await sync_user.enqueue(2).start(dedup_key="u1", dedup=Dedup.throttle())
        # another key, and the same key of another mode, are independent
        other = await sync_user.enqueue(3).start(dedup_key="u2", dedup=Dedup.throttle())
        keep = await sync_user.enqueue(4).start(dedup_key="u1", dedup=Dedup.keep_last())
    assert first.dedup_outcome is DedupOutcome.ENQUEUED
    assert second.dedup_outcome is DedupOutcome.DROPPED
    # the dropped task's handle is one of the task that holds the key
    assert second.id == first.id == second.dedup_other
    assert other.dedup_outcome is keep.dedup_outcome is DedupOutcome.ENQUEUED
    assert all(ttl > 0 for name, ttl in _dedup_keys(redis_url, worker).items() if name != "ddi")
    async with run_worker(worker):
        with anyio.fail_after(10):
            assert (await second.result()).result == 1
            assert (await other.result()).result == 3
            await keep.result()
            # window 0: the key is free once its task ended
            third = await sync_user.enqueue(5).start(dedup_key="u1", dedup=timedelta(0))
            assert third.dedup_outcome is DedupOutcome.ENQUEUED
            assert (await third.result()).result == 5
    assert sorted(runs) == [1, 3, 4, 5]
    assert _dedup_keys(redis_url, worker) == {"ddi": 0}


async def test_throttle_window_outlives_a_success(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    runs: list[int] = []

    @worker.task()
    async def ping(n: int) -> int:
        runs.append(n)
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await ping.enqueue(1).start(dedup_key="k", dedup=Dedup.throttle(60))
            assert (await first.result()).result == 1
            again = await ping.enqueue(2).start(dedup_key="k", dedup=Dedup.throttle(60))
            assert again.dedup_outcome is DedupOutcome.DROPPED
            assert again.id == first.id
            assert (await again.result()).result == 1
    assert runs == [1]
    (name,) = [n for n in _dedup_keys(redis_url, worker) if n != "ddi"]
    # the record lives as long as the window, not a day
    assert 0 < _dedup_keys(redis_url, worker)[name] <= 60_000


@pytest.mark.parametrize("ending", ["failure", "abort_queued", "abort_running", "dead_letter"])
async def test_throttle_key_freed_however_the_task_fails(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str, ending: str
) -> None:
    started = anyio.Event()
    runs: list[int] = []

    @worker.task(max_tries=1)
    async def job(n: int) -> int:
        runs.append(n)
        if n == 0:
            started.set()
            if ending == "failure":
                raise ValueError("boom")
            await anyio.sleep(60)
        return n

    throttle = Dedup.throttle(timedelta(hours=1))
    with anyio.fail_after(15):
        if ending == "abort_queued":
            async with worker:
                first = await job.enqueue(0).start(dedup_key="k", dedup=throttle)
                assert await first.abort() is True
        async with run_worker(worker):
            if ending == "dead_letter":
                # a function no worker knows is dead-lettered at once
                first = await worker.enqueue_unsafe("missing", 0).start(
                    dedup_key="k", dedup=throttle
                )
                assert not (await first.result()).success
                assert [d.task_id for d in await worker.dead_letters()] == [first.id]
                again = await worker.enqueue_unsafe("missing", 1).start(
                    dedup_key="k", dedup=throttle
                )
                assert again.dedup_outcome is DedupOutcome.ENQUEUED
                assert not (await again.result()).success
                return
            if ending in ("failure", "abort_running"):
                first = await job.enqueue(0).start(dedup_key="k", dedup=throttle)
                await started.wait()
                if ending == "abort_running":
                    assert await first.abort() is True
                assert not (await first.result()).success
            again = await job.enqueue(1).start(dedup_key="k", dedup=throttle)
            assert again.dedup_outcome is DedupOutcome.ENQUEUED
            assert (await again.result()).result == 1
    assert runs == ([1] if ending == "abort_queued" else [0, 1])
    assert _dedup_keys(redis_url, worker)["ddi"] == 0


async def test_debounce_replaces_the_pending_task(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    runs: list[int] = []

    @worker.task()
    async def reindex(n: int) -> int:
        runs.append(n)
        return n

    window = timedelta(milliseconds=300)
    async with worker:
        handles = [
            await reindex.enqueue(n).start(dedup_key="doc", dedup=Dedup.debounce(window))
            for n in range(5)
        ]
        assert await handles[-1].status() == TaskStatus.SCHEDULED
    assert handles[0].dedup_outcome is DedupOutcome.ENQUEUED
    for before, after in itertools.pairwise(handles):
        assert after.dedup_outcome is DedupOutcome.REPLACED
        assert after.dedup_other == before.id
    async with run_worker(worker):
        with anyio.fail_after(10):
            for before, after in itertools.pairwise(handles):
                assert _superseded(await before.result(), after.id)
            last = await handles[-1].result()
            assert last.result == 4
            # its start was pushed out by the window
            assert last.start_time - last.created_time >= 300
    assert runs == [4]
    assert _dedup_keys(redis_url, worker) == {"ddi": 0}


async def test_debounce_enqueues_anew_once_the_task_started(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    @worker.task()
    async def reindex(n: int) -> int:
        runs.append(n)
        if n == 0:
            started.set()
            await release.wait()
        return n

    debounce = Dedup.debounce(timedelta(milliseconds=50))
    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await reindex.enqueue(0).start(dedup_key="doc", dedup=debounce)
            await started.wait()
            second = await reindex.enqueue(1).start(dedup_key="doc", dedup=debounce)
            assert second.dedup_outcome is DedupOutcome.ENQUEUED
            assert (await second.result()).result == 1
            release.set()
            assert (await first.result()).result == 0
    assert sorted(runs) == [0, 1]


async def test_debounce_races_with_claims_lose_and_duplicate_nothing(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str
) -> None:
    """Producers replace the key's task as fast as they can while two workers claim it: every
    handle ends either run (once) or superseded by another handle's task, and the last runs."""
    workers = [worker_factory(concurrency=4, prefetch=4) for _ in range(2)]
    runs: list[int] = []
    for w in workers:

        @w.task(name="hot")
        async def hot(n: int) -> int:
            runs.append(n)
            return n

    producer = workers[0]
    # a window this short lets workers claim many of the key's tasks between replacements
    debounce = Dedup.debounce(timedelta(milliseconds=1))
    handles: list[Any] = []
    numbers = iter(range(1000))

    async def produce(count: int) -> None:
        for _ in range(count):
            n = next(numbers)
            handles.append(
                await producer.enqueue_unsafe("hot", n).start(dedup_key="k", dedup=debounce)
            )

    with anyio.fail_after(60):
        async with run_worker(workers[0]), run_worker(workers[1]):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(produce, 40)
            results = {h.id: await h.result() for h in handles}
    ids = {h.id for h in handles}
    assert len(ids) == len(handles) == 160
    successor: dict[str, str] = {}
    for task_id, r in results.items():
        if not r.success:
            assert isinstance(r.exception, StreaqCancelled)
            successor[task_id] = str(r.exception).split("superseded by task ", 1)[1].split()[0]
    # every superseded task hands over to one that ran, through its successors
    for task_id in ids:
        seen = {task_id}
        while task_id in successor:
            task_id = successor[task_id]
            assert task_id in ids
            assert task_id not in seen
            seen.add(task_id)
        assert results[task_id].success
    ran = [r.result for r in results.values() if r.success]
    assert sorted(ran) == sorted(runs)
    assert len(set(runs)) == len(runs)
    assert _dedup_keys(redis_url, producer) == {"ddi": 0}


async def test_keep_last_keeps_one_follow_up_with_the_latest_arguments(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []
    running = [0, 0]  # now, peak

    @worker.task()
    async def sync(n: int) -> int:
        running[0] += 1
        running[1] = max(running)
        runs.append(n)
        try:
            if n == 0:
                started.set()
                await release.wait()
        finally:
            running[0] -= 1
        return n

    keep = Dedup.keep_last()
    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await sync.enqueue(0).start(dedup_key="acct", dedup=keep)
            assert first.dedup_outcome is DedupOutcome.ENQUEUED
            await started.wait()
            await wait_for_status(first, TaskStatus.RUNNING)
            follow = await sync.enqueue(1).start(dedup_key="acct", dedup=keep)
            assert follow.dedup_outcome is DedupOutcome.FOLLOWS
            assert follow.dedup_other == first.id
            assert await follow.status() == TaskStatus.SCHEDULED
            later = await sync.enqueue(2).start(dedup_key="acct", dedup=keep)
            last = await sync.enqueue(3).start(dedup_key="acct", dedup=keep)
            assert later.dedup_outcome is last.dedup_outcome is DedupOutcome.REPLACED
            assert (later.dedup_other, last.dedup_other) == (follow.id, later.id)
            assert _superseded(await follow.result(), later.id)
            assert _superseded(await later.result(), last.id)
            release.set()
            done = await last.result()
            assert done.result == 3
            assert done.start_time >= (await first.result()).finish_time
    assert runs == [0, 3]
    assert running[1] == 1
    assert _dedup_keys(redis_url, worker) == {"ddi": 0}


@pytest.mark.parametrize("ending", ["failure", "abort"])
async def test_keep_last_follow_up_runs_however_the_holder_ends(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str, ending: str
) -> None:
    started = anyio.Event()
    runs: list[int] = []

    @worker.task(max_tries=1)
    async def sync(n: int) -> int:
        runs.append(n)
        if n == 0:
            started.set()
            if ending == "failure":
                await anyio.sleep(0.05)
                raise ValueError("boom")
            await anyio.sleep(60)
        return n

    keep = Dedup.keep_last()
    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await sync.enqueue(0).start(dedup_key="acct", dedup=keep)
            await started.wait()
            await wait_for_status(first, TaskStatus.RUNNING)
            follow = await sync.enqueue(1).start(dedup_key="acct", dedup=keep)
            if follow.dedup_outcome is not DedupOutcome.FOLLOWS:
                # the failure ended the holder first: the new task ran as any task
                assert ending == "failure"
                assert follow.dedup_outcome is DedupOutcome.ENQUEUED
            if ending == "abort":
                assert await first.abort() is True
            assert not (await first.result()).success
            assert (await follow.result()).result == 1
    assert runs == [0, 1]
    assert _dedup_keys(redis_url, worker) == {"ddi": 0}


async def test_keep_last_aborted_follow_up_frees_its_place(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    @worker.task()
    async def sync(n: int) -> int:
        runs.append(n)
        if n == 0:
            started.set()
            await release.wait()
        return n

    keep = Dedup.keep_last()
    async with run_worker(worker):
        with anyio.fail_after(10):
            first = await sync.enqueue(0).start(dedup_key="acct", dedup=keep)
            await started.wait()
            await wait_for_status(first, TaskStatus.RUNNING)
            follow = await sync.enqueue(1).start(dedup_key="acct", dedup=keep)
            assert await follow.abort() is True
            again = await sync.enqueue(2).start(dedup_key="acct", dedup=keep)
            assert again.dedup_outcome is DedupOutcome.FOLLOWS
            release.set()
            assert (await again.result()).result == 2
    assert runs == [0, 2]
    assert _dedup_keys(redis_url, worker) == {"ddi": 0}


async def test_keep_last_replaces_a_task_not_started(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    runs: list[int] = []

    @worker.task()
    async def sync(n: int) -> int:
        runs.append(n)
        return n

    async with worker:
        first = await sync.enqueue(0).start(dedup_key="acct", dedup=Dedup.keep_last())
        second = await sync.enqueue(1).start(dedup_key="acct", dedup=Dedup.keep_last())
    assert second.dedup_outcome is DedupOutcome.REPLACED
    assert second.dedup_other == first.id
    async with run_worker(worker):
        with anyio.fail_after(10):
            assert _superseded(await first.result(), second.id)
            assert (await second.result()).result == 1
    assert runs == [1]


@pytest.mark.parametrize("protection", ["signing_secret", "encryption_key"])
async def test_dedup_with_signing_and_encryption(
    worker_factory: WorkerFactory, run_worker: RunWorker, protection: str
) -> None:
    secret: Any = "s3cret" if protection == "signing_secret" else b"k" * 32
    worker = worker_factory(**{protection: secret})
    runs: list[int] = []

    @worker.task()
    async def reindex(n: int) -> int:
        runs.append(n)
        return n

    debounce = Dedup.debounce(timedelta(milliseconds=100))
    async with worker:
        first = await reindex.enqueue(0).start(dedup_key="doc", dedup=debounce)
        second = await reindex.enqueue(1).start(dedup_key="doc", dedup=debounce)
        dropped = await reindex.enqueue(2).start(dedup_key="t", dedup=Dedup.throttle(60))
        kept = await reindex.enqueue(3).start(dedup_key="t", dedup=Dedup.throttle(60))
    assert kept.id == dropped.id
    async with run_worker(worker):
        with anyio.fail_after(10):
            # the superseded task's failure is written by the server: accepted as such
            assert _superseded(await first.result(), second.id)
            assert (await second.result()).result == 1
            assert (await kept.result()).result == 2
    assert sorted(runs) == [1, 2]


async def test_dedup_options_are_checked(worker: Worker[Any]) -> None:
    from streaq.types import StreaqError

    @worker.task()
    async def noop() -> None:
        return None

    @worker.task()
    async def then(_: None) -> None:
        return None

    with pytest.raises(StreaqError, match="together"):
        noop.enqueue().start(dedup_key="k")
    with pytest.raises(StreaqError, match="window"):
        Dedup.debounce(0)
    async with worker:
        parent = noop.enqueue()
        with pytest.raises(StreaqError, match="pipeline"):
            await parent.then(then).start(dedup_key="k", dedup=Dedup.keep_last())
        with pytest.raises(StreaqError, match="pipeline"):
            await noop.enqueue().start(dedup_key="k", dedup=Dedup.keep_last(), schedule="* * * * *")


async def test_a_debounced_task_expires_counting_from_its_start(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task(expire=timedelta(milliseconds=100))
    async def fresh(n: int) -> int:
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await fresh.enqueue(1).start(
                dedup_key="k", dedup=Dedup.debounce(timedelta(milliseconds=300))
            )
            # it waits the window, longer than its expiry, and still runs
            assert (await task.result()).result == 1
