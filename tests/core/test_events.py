"""Progress reports and the queue's event stream: complete, ordered, resumable, bounded."""

from __future__ import annotations

import threading
from contextlib import aclosing
from typing import Any
from urllib.parse import urlparse

import anyio
import msgspec
import pytest
import redis
from freezing_proxy import open_proxy

from streaq import Worker
from streaq._codec import ResultRecord, encode
from streaq._library import Arg
from streaq.task import EventKind, Task, TaskEvent, TaskStatus
from streaq.types import StreaqError, StreaqRetry
from streaq.utils import now_ms

from ._support import RunWorker, Topology, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio

Q, S, P, Y = EventKind.ENQUEUED, EventKind.STARTED, EventKind.PROGRESS, EventKind.RETRIED
D, F, A, L = EventKind.FINISHED, EventKind.FAILED, EventKind.ABORTED, EventKind.DEAD_LETTERED


async def collect(task: Task[Any, Any]) -> list[TaskEvent]:
    """Every event of ``task`` until its final one."""
    with anyio.fail_after(15):
        return [event async for event in task.events()]


def kinds(events: list[TaskEvent]) -> list[EventKind]:
    return [event.kind for event in events]


async def test_a_success_reports_progress_in_order(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task
    async def work(n: int) -> int:
        await work.context.progress(0.5)
        await work.context.progress({"done": n, "of": n})
        return n

    async with run_worker(worker):
        task = await work.enqueue(3)
        events = await collect(task)
        assert await task.progress() == {"done": 3, "of": 3}
    assert kinds(events) == [Q, S, P, P, D]
    assert [e.progress for e in events] == [None, None, 0.5, {"done": 3, "of": 3}, None]
    assert {e.task_id for e in events} == {task.id}
    assert {e.fn_name for e in events} == {work.fn_name}
    assert [e.tries for e in events] == [0, 1, 1, 1, 1]
    assert [e.id for e in events] == sorted((e.id for e in events), key=_order)
    assert events[-1].final
    assert not any(e.final for e in events[:-1])


def _order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def test_a_retry_then_a_failure(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task(max_tries=3)
    async def flaky() -> None:
        if flaky.context.tries == 1:
            raise StreaqRetry(delay=0)
        raise ValueError("no")

    async with run_worker(worker):
        task = await flaky.enqueue()
        events = await collect(task)
    assert kinds(events) == [Q, S, Y, S, F]
    assert [e.tries for e in events] == [0, 1, 1, 2, 2]


async def test_aborts_running_and_queued(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def sleeper() -> None:
        await anyio.sleep(60)

    async with worker:
        queued = await sleeper.enqueue()
        assert await queued.abort()
        assert kinds(await collect(queued)) == [Q, A]
    async with run_worker(worker):
        running = await sleeper.enqueue()
        with anyio.fail_after(10):
            await wait_for_status(running, TaskStatus.RUNNING)
            assert await running.abort()
        assert kinds(await collect(running)) == [Q, S, A]


async def test_a_dead_letter(worker: Worker[Any], run_worker: RunWorker) -> None:
    async with run_worker(worker):
        task = await worker.enqueue_unsafe("nowhere", 1)
        events = await collect(task)
    assert kinds(events) == [Q, L]
    assert events[-1].fn_name == "nowhere"


async def test_sync_task_progress_and_task_info(worker: Worker[Any], run_worker: RunWorker) -> None:
    reported = threading.Event()
    release = threading.Event()

    @worker.task
    def crunch() -> str:
        crunch.context.progress([1, "of", 2])
        reported.set()
        release.wait(10)
        crunch.context.progress("almost")
        return "done"

    async with run_worker(worker):
        task = await crunch.enqueue()
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(reported.wait, 10)
            info = await task.info()
            assert info is not None
            assert info.progress == [1, "of", 2]
            assert await worker.progress_by_id(task.id) == [1, "of", 2]
            release.set()
            assert (await task.result()).result == "done"
        assert await task.progress() == "almost"
        assert kinds(await collect(task)) == [Q, S, P, P, D]


async def test_progress_outside_a_worker_and_too_large(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task
    async def big() -> None:
        await big.context.progress("x" * 10_000)

    context = big.build_context("some-id")
    with pytest.raises(StreaqError, match="worker runs"):
        await context.progress(1)
    async with run_worker(worker):
        with anyio.fail_after(10):
            result = await (await big.enqueue()).result()
    assert not result.success
    assert "at most 4096 bytes" in str(result.exception)


async def test_events_resume_after_an_id_and_filter(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    @worker.task
    async def noop(n: int) -> int:
        return n

    async with run_worker(worker):
        tasks = [await noop.enqueue(n) for n in range(5)]
        for task in tasks:
            await collect(task)
        history: list[TaskEvent] = []
        with anyio.fail_after(10):
            async with aclosing(worker.events(since="0")) as stream:
                async for event in stream:
                    history.append(event)
                    if len(history) == 15:
                        break
        assert kinds(history).count(D) == 5
        middle = history[7]
        resumed: list[TaskEvent] = []
        with anyio.fail_after(10):
            async with aclosing(worker.events(since=middle.id)) as stream:
                async for event in stream:
                    resumed.append(event)
                    if len(resumed) == 7:
                        break
        assert resumed == history[8:]
        finished: list[TaskEvent] = []
        with anyio.fail_after(10):
            only = worker.events(since="0", kinds=["finished"], task_id=tasks[2].id)
            async with aclosing(only) as stream:
                async for event in stream:
                    finished.append(event)
                    break
        assert [(e.kind, e.task_id) for e in finished] == [(D, tasks[2].id)]
    with pytest.raises(StreaqError, match="since"):
        worker.events(since="yesterday")
    with pytest.raises(StreaqError, match="unknown event kind"):
        worker.events(kinds=["exploded"])


async def test_live_events_from_now_on(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def noop() -> None:
        pass

    async with run_worker(worker):
        await collect(await noop.enqueue())  # history that a reader from now on skips
        seen: list[TaskEvent] = []
        ready = anyio.Event()

        async def follow() -> None:
            async with aclosing(worker.events()) as stream:
                ready.set()
                async for event in stream:
                    seen.append(event)
                    if event.final:
                        return

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await ready.wait()
                task = await noop.enqueue()
        # "now" is when the reader first reads: the new task's events up to its final one, and
        # nothing of the history
        assert {e.task_id for e in seen} == {task.id}
        assert seen[-1].kind == D


async def test_task_events_end_for_a_task_whose_events_are_gone(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    @worker.task
    async def noop() -> None:
        pass

    async with run_worker(worker):
        task = await noop.enqueue()
        with anyio.fail_after(10):
            await task.result()
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(worker.keys.events)
        finally:
            client.close()
        assert await collect(task) == []
        assert await collect(worker.enqueue_unsafe("never-enqueued")) == []


async def test_events_off(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str
) -> None:
    worker = worker_factory(events_maxlen=0)

    @worker.task
    async def work() -> int:
        await work.context.progress(7)
        return 1

    async with run_worker(worker):
        task = await work.enqueue()
        with anyio.fail_after(10):
            await task.result()
        assert await task.progress() == 7
        with pytest.raises(StreaqError, match="events_maxlen=0"):
            task.events()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(worker.keys.events) == 0
    finally:
        client.close()
    with pytest.raises(StreaqError, match="events_maxlen"):
        worker_factory(events_maxlen=-1)


async def test_the_stream_is_bounded_and_expires(
    worker_factory: WorkerFactory, run_worker: RunWorker, redis_url: str
) -> None:
    worker = worker_factory(events_maxlen=20, concurrency=32)

    @worker.task
    async def noop(n: int) -> int:
        return n

    async with run_worker(worker):
        tasks = [noop.enqueue(n) for n in range(300)]
        await worker.enqueue_many(tasks)
        with anyio.fail_after(20):
            for task in tasks:
                await task.result()
    client = redis.Redis.from_url(redis_url)
    try:
        # MAXLEN ~ trims whole nodes of the stream (100 entries by default)
        assert 20 <= client.xlen(worker.keys.events) <= 20 + 100
        assert 0 < client.pttl(worker.keys.events) <= 7 * 24 * 3600 * 1000
    finally:
        client.close()


async def test_progress_keys_live_as_long_as_results(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str
) -> None:
    @worker.task(ttl=60)
    async def kept() -> None:
        await kept.context.progress(1)

    @worker.task(ttl=0)
    async def unkept() -> None:
        await unkept.context.progress(1)

    async with run_worker(worker):
        with anyio.fail_after(10):
            one = await kept.enqueue()
            two = await unkept.enqueue()
            await one.result()
        assert kinds(await collect(two)) == [Q, S, P, D]  # its result is only published
    client = redis.Redis.from_url(redis_url)
    try:
        assert 50_000 < client.pttl(worker.keys.progress(one.id)) <= 60_000
        assert client.exists(worker.keys.progress(two.id)) == 0
        assert client.exists(worker.prefix + "pgd") == 0
    finally:
        client.close()


async def test_a_lost_connection_loses_no_event(
    worker: Worker[Any],
    run_worker: RunWorker,
    redis_url: str,
    topology: Topology,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reader's connection goes silent (a frozen proxy) while tasks run: it reconnects and
    resumes after the last event it saw, so every event of the stream reaches it, in order."""
    if topology.name != "single":
        pytest.skip("the proxy fronts one plain server")

    @worker.task
    async def noop(n: int) -> int:
        return n

    address = urlparse(redis_url)
    async with open_proxy((address.hostname or "127.0.0.1", address.port or 6379)) as proxy:
        reader = Worker(
            redis_url=proxy.url,
            queue_name=worker.queue_name,
            redis_kwargs={"socket_timeout": 0.5},
            handle_signals=False,
        )
        seen: list[TaskEvent] = []
        async with reader, run_worker(worker):
            first = await noop.enqueue(0)
            rest: list[Task[Any, Any]] = []
            with anyio.fail_after(30):
                async with aclosing(reader.events(since="0")) as stream:
                    async for event in stream:
                        seen.append(event)
                        if event.final and event.task_id == first.id:
                            # written while the reader's connection is silent
                            proxy.freeze()
                            rest = [noop.enqueue(n) for n in range(1, 21)]
                            await worker.enqueue_many(rest)
                            for task in rest:
                                await task.result()
                        if kinds(seen).count(D) == 21:
                            break
    client = redis.Redis.from_url(redis_url)
    try:
        entries: Any = client.xrange(worker.keys.events)
        written = [entry_id.decode() for entry_id, _ in entries]
    finally:
        client.close()
    assert "cannot read the events" in caplog.text  # the read was cut, then resumed
    assert [event.id for event in seen] == written
    for task in [first, *rest]:
        assert [e.kind for e in seen if e.task_id == task.id] == [Q, S, D]


async def test_a_batch_writes_one_event_per_task(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=32)

    @worker.task
    async def noop(n: int) -> int:
        return n

    async with run_worker(worker):
        tasks = [noop.enqueue(n) for n in range(200)]
        await worker.enqueue_many(tasks)
        with anyio.fail_after(20):
            for task in tasks:
                await task.result()
        history: list[TaskEvent] = []
        with anyio.fail_after(10):
            async with aclosing(worker.events(since="0")) as stream:
                async for event in stream:
                    history.append(event)
                    if len(history) == 600:
                        break
    for task in tasks:
        assert [e.kind for e in history if e.task_id == task.id] == [Q, S, D]


async def test_a_repeated_call_writes_no_event_twice(worker: Worker[Any], redis_url: str) -> None:
    """A finish call sent again (its reply lost) is a no-op: its marks and outcomes were applied,
    and so were their events, once."""

    @worker.task
    async def work(n: int) -> int:
        return n

    async with worker:
        functions = worker._client.functions
        stream = worker.keys.stream("normal")
        first, second = await work.enqueue(1), await work.enqueue(2)
        client = redis.Redis.from_url(redis_url)
        try:
            delivered: Any = client.xreadgroup("g", "w1", {stream: ">"})
            (msgid_1, _), (msgid_2, _) = delivered[0][1]
            now = now_ms()
            # the first only started, the second started and finished in the same call
            marks: list[Arg] = ["normal", first.id, work.fn_name, 1, now]
            marks += ["normal", second.id, work.fn_name, 1, now]
            record = encode(
                ResultRecord(work.fn_name, now, now, 0, now, now, 1, "w1", msgspec.Raw(encode(2)))
            )
            group: list[Arg] = [second.id, "normal", msgid_2.decode(), "r", record, 60_000, ""]
            for _ in range(2):
                await functions.finish("w1", now, marks, group)
            # progress only while the worker holds the task: not after its end, nor by another
            late = (second.id, "normal", msgid_2.decode(), work.fn_name, 1)
            assert not await functions.progress("w1", late, 0, now, encode(5))
            running = (first.id, "normal", msgid_1.decode(), work.fn_name, 1)
            assert not await functions.progress("w2", running, 0, now, encode(5))
            assert await functions.progress("w1", running, now, now, encode(6))
            entries: Any = client.xrange(worker.keys.events)
        finally:
            client.close()
    written = [(f[b"k"], f[b"i"].decode()) for _, f in entries]
    assert written == [
        (b"q", first.id),
        (b"q", second.id),
        (b"s", first.id),
        (b"s", second.id),
        (b"d", second.id),
        (b"p", first.id),  # marked started before: no second started event
    ]
