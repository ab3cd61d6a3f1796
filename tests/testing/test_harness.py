"""``streaq.testing``: a worker in the test's event loop, on a virtual clock, drained on demand."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from streaq import TaskStatus, Worker
from streaq.testing import DrainSummary, VirtualClock, open_harness, use_clock
from streaq.types import StreaqError, StreaqRetry
from streaq.utils import now_ms

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)


async def test_a_task_delayed_an_hour_runs_in_under_a_second(worker: Worker[Any]) -> None:
    runs: list[int] = []

    @worker.task
    async def remind(text: str) -> str:
        runs.append(now_ms())
        return text.upper()

    async with open_harness(worker) as harness:
        begun = time.monotonic()
        task = await remind.enqueue("call back").start(delay=HOUR)
        assert await harness.drain() == DrainSummary(completed=0, failed=0, retried=0, aborted=0)
        assert await task.status() == TaskStatus.SCHEDULED
        due = harness.clock.now_ms() + 3_600_000
        harness.advance(HOUR)
        assert await harness.drain() == DrainSummary(completed=1, failed=0, retried=0, aborted=0)
        result = await task.result(timeout=1)
        elapsed = time.monotonic() - begun
    assert result.result == "CALL BACK"
    assert runs == [due]
    assert elapsed < 1.0


async def test_moving_the_clock_wakes_the_scheduler(worker: Worker[Any]) -> None:
    @worker.task
    async def ping() -> str:
        return "pong"

    async with open_harness(worker) as harness:
        task = await ping.enqueue().start(delay=HOUR)
        harness.advance(HOUR)
        # no drain: the sleeping scheduler itself wakes up and moves the task
        result = await task.result(timeout=5)
    assert result.result == "pong"


async def test_a_sync_task_reads_the_virtual_clock_too(worker: Worker[Any]) -> None:
    @worker.task
    def stamp() -> int:
        return now_ms()  # in a worker thread: the context, clock included, goes along

    clock = VirtualClock(datetime(2030, 1, 1, tzinfo=UTC))
    async with open_harness(worker, clock=clock) as harness:
        task = await stamp.enqueue().start(delay=HOUR)
        harness.advance(HOUR)
        assert (await harness.drain()).completed == 1
        result = await task.result(timeout=1)
    assert result.result == int(datetime(2030, 1, 1, 1, tzinfo=UTC).timestamp() * 1000)


async def test_retries_back_off_in_virtual_time(worker: Worker[Any]) -> None:
    tries: list[int] = []

    @worker.task
    async def flaky() -> int:
        tries.append(flaky.context.tries)
        if len(tries) < 3:
            raise StreaqRetry("not yet", delay=timedelta(minutes=10))
        return len(tries)

    async with open_harness(worker) as harness:
        task = await flaky.enqueue()
        assert (await harness.drain()).retried == 1
        harness.advance(timedelta(minutes=9))
        assert await harness.drain() == DrainSummary(completed=0, failed=0, retried=0, aborted=0)
        assert tries == [1]
        harness.advance(timedelta(minutes=1))
        assert (await harness.drain()).retried == 1
        assert tries == [1, 2]
        harness.advance(timedelta(minutes=10))
        assert (await harness.drain()).completed == 1
        result = await task.result(timeout=1)
    assert tries == [1, 2, 3]
    assert result.result == 3


async def test_the_default_back_off_elapses_in_virtual_time(worker: Worker[Any]) -> None:
    tries: list[int] = []

    @worker.task
    async def flaky() -> None:
        tries.append(flaky.context.tries)
        if len(tries) < 2:
            raise StreaqRetry("not yet")  # tries ** 2 seconds: 1 s after the first try

    async with open_harness(worker) as harness:
        await flaky.enqueue()
        await harness.drain()
        assert tries == [1]
        harness.advance(1)
        assert (await harness.drain()).completed == 1
    assert tries == [1, 2]


async def test_cron_fires_once_per_advanced_period(worker: Worker[Any]) -> None:
    fired: list[int] = []

    @worker.cron("* * * * *")
    async def every_minute() -> None:
        fired.append(now_ms())

    minute = datetime(2030, 1, 1, tzinfo=UTC)
    clock = VirtualClock(minute + timedelta(seconds=30))
    async with open_harness(worker, clock=clock) as harness:
        assert (await harness.drain()).completed == 0
        for n in range(1, 4):
            harness.advance(timedelta(minutes=1))
            assert (await harness.drain()).completed == 1
            assert len(fired) == n
        harness.advance(timedelta(seconds=20))
        assert (await harness.drain()).completed == 0
    start = int(minute.timestamp() * 1000)
    assert fired == [start + n * 60_000 + 30_000 for n in range(1, 4)]


async def test_a_repeating_task_runs_once_per_advanced_period(worker: Worker[Any]) -> None:
    runs: list[int] = []

    @worker.task
    async def poll() -> None:
        runs.append(now_ms())

    start = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    async with open_harness(worker, clock=VirtualClock(start)) as harness:
        task = await poll.enqueue().start(schedule="*/5 * * * *")
        assert (await harness.drain()).completed == 0
        for _ in range(3):
            harness.advance(timedelta(minutes=5))
            assert (await harness.drain()).completed == 1
        assert await task.unschedule()
    first = int(datetime(2030, 1, 1, 0, 5, 30, tzinfo=UTC).timestamp() * 1000)
    assert runs == [first + n * 300_000 for n in range(3)]


async def test_moving_the_clock_wakes_the_cron_duty(worker: Worker[Any]) -> None:
    fired = anyio.Event()

    @worker.cron("0 * * * *")
    async def hourly() -> None:
        fired.set()

    clock = VirtualClock(datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    async with open_harness(worker, clock=clock) as harness:
        harness.advance(timedelta(minutes=30))
        with anyio.fail_after(5):
            await fired.wait()


async def test_then_links_and_dependents_are_drained(worker: Worker[Any]) -> None:
    order: list[str] = []

    @worker.task
    async def fetch(n: int) -> int:
        order.append("fetch")
        return n * 2

    @worker.task
    async def store(n: int) -> int:
        order.append("store")
        return n + 1

    @worker.task
    async def notify() -> str:
        order.append("notify")
        return "sent"

    async with open_harness(worker) as harness:
        head = fetch.enqueue(20).start(delay=HOUR)
        chain = head.then(store)
        await chain
        follower = await notify.enqueue().start(after=chain.id)
        harness.advance(HOUR)
        summary = await harness.drain()
        assert summary.completed == 3
        assert (await chain.result(timeout=1)).result == 41
        assert (await follower.result(timeout=1)).result == "sent"
    assert order == ["fetch", "store", "notify"]


async def test_drain_returns_with_nothing_queued_or_running(worker: Worker[Any]) -> None:
    @worker.task
    async def nap(n: int) -> int:
        await anyio.sleep(0.01)
        return n

    async with open_harness(worker) as harness:
        tasks = [await nap.enqueue(n) for n in range(10)]
        assert (await harness.drain()).completed == 10
        assert worker.running() == 0
        assert await worker.queue_size(include_scheduled=False) == 0
        assert [await task.status() for task in tasks] == [TaskStatus.DONE] * 10


async def test_leaving_the_block_leaves_nothing_running(worker: Worker[Any]) -> None:
    started = anyio.Event()

    @worker.task
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    before = {task.id for task in anyio.get_running_tasks()}
    async with open_harness(worker) as harness:
        assert not worker.handle_signals
        task = await forever.enqueue()
        with anyio.fail_after(5):
            await started.wait()
        assert worker.running() == 1
    after = {task.id for task in anyio.get_running_tasks()}
    assert after == before
    assert worker.running() == 0
    assert worker.handle_signals  # restored
    assert abs(now_ms() - time.time_ns() // 1_000_000) < 1000  # the wall clock again
    with pytest.raises(StreaqError, match="not running"):
        await harness.drain()
    async with worker:
        # stopped gracefully: the unfinished task went back to its stream for another worker
        assert await task.status() == TaskStatus.QUEUED


async def test_a_block_that_raises_cancels_the_run(worker: Worker[Any]) -> None:
    before = {task.id for task in anyio.get_running_tasks()}
    with pytest.raises(LookupError):
        async with open_harness(worker):
            raise LookupError("the test failed")
    assert {task.id for task in anyio.get_running_tasks()} == before
    assert worker.running() == 0


async def test_a_block_cancelled_from_outside_ends_the_run(worker: Worker[Any]) -> None:
    before = {task.id for task in anyio.get_running_tasks()}
    with anyio.move_on_after(0.2) as scope:
        async with open_harness(worker):
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert {task.id for task in anyio.get_running_tasks()} == before
    assert worker.running() == 0


async def test_drain_leaves_paused_tasks_at_their_gate(worker: Worker[Any]) -> None:
    @worker.task
    async def idle() -> None: ...

    async with open_harness(worker) as harness:
        await worker.pause(idle)
        task = await idle.enqueue()
        assert (await harness.drain()).completed == 0
        assert await task.status() == TaskStatus.QUEUED
        await worker.resume(idle)
        assert (await harness.drain()).completed == 1


async def test_drain_times_out_while_a_task_runs_on(worker: Worker[Any]) -> None:
    release = anyio.Event()

    @worker.task
    async def slow() -> None:
        await release.wait()

    async with open_harness(worker) as harness:
        await slow.enqueue()
        with pytest.raises(TimeoutError, match=r"did not drain within 0.3s: 1 task\(s\) in its"):
            await harness.drain(timeout=0.3)
        release.set()
        assert (await harness.drain()).completed == 1


async def test_a_running_worker_cannot_get_a_harness(worker: Worker[Any]) -> None:
    async with open_harness(worker):
        with pytest.raises(StreaqError, match="running already"):
            async with open_harness(worker):
                pass


async def test_the_clock_of_a_context() -> None:
    clock = VirtualClock(datetime(2030, 1, 1, tzinfo=UTC))
    with use_clock(clock):
        assert now_ms() == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)
        clock.advance(timedelta(milliseconds=1500))
        assert now_ms() == clock.now_ms()
        assert clock.now() == datetime(2030, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert abs(now_ms() - time.time_ns() // 1_000_000) < 1000


def test_bad_clock_input_is_refused() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        VirtualClock(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="only moves forward"):
        VirtualClock().advance(-1)
