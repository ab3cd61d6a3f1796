"""Changing a running worker's concurrency: ``Worker.set_concurrency`` in the worker's process,
``Worker.scale`` (``streaq scale``, the UI) for every running worker of the queue. Parallelism is
counted by the tasks themselves, never inferred from timings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.types import StreaqError

from ._support import RunWorker, WorkerFactory, wait_until

pytestmark = pytest.mark.anyio


class Gauge:
    """Tasks running now, the peak since the last reset, and a gate each task waits at."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started = 0
        self.released = 0
        self._changed = anyio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def run(self) -> None:
        """The body of a task: count itself running until the test releases it."""
        self.now += 1
        self.started += 1
        self.peak = max(self.peak, self.now)
        self._notify()
        ticket = self.started
        try:
            while self.released < ticket:
                await self._changed.wait()
        finally:
            self.now -= 1
            self._notify()

    def release(self, count: int = 1) -> None:
        """Let ``count`` more tasks (in the order they started) finish."""
        self.released += count
        self._notify()

    async def until(self, predicate: Any) -> None:
        """Wait until ``predicate(self)`` holds."""
        while not predicate(self):
            await self._changed.wait()


async def test_set_concurrency_lowers_and_raises_a_running_worker(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=2)
    gauge = Gauge()

    @worker.task()
    async def work() -> None:
        await gauge.run()

    with anyio.fail_after(20):
        async with run_worker(worker):
            first = [await work.enqueue() for _ in range(2)]
            await gauge.until(lambda g: g.now == 2)
            # claimed beside the running two (prefetch 2): ready to start the moment a slot frees
            queued = [await work.enqueue() for _ in range(4)]
            await wait_until(lambda: _holds(worker, 4))
            worker.set_concurrency(1)
            assert (worker.concurrency, worker.prefetch, worker.sync_concurrency) == (1, 1, 1)
            gauge.peak = 0
            gauge.release(2)
            for n in range(3):
                # one starts; the next may start only once it was released
                await gauge.until(lambda g, n=n: g.started >= 3 + n)
                assert (gauge.now, gauge.started) == (1, 3 + n)
                gauge.release()
            assert gauge.peak == 1
            # raised beyond the runners the run started with: more start at once
            worker.set_concurrency(4)
            more = [await work.enqueue() for _ in range(4)]
            await gauge.until(lambda g: g.now == 4)
            assert gauge.peak == 4
            gauge.release(5)
            for task in [*first, *queued, *more]:
                assert (await task.result()).success
    assert gauge.started == 10


async def _holds(worker: Worker[Any], count: int) -> bool:
    state = worker._run.state
    return state is not None and len(state.jobs) >= count


async def test_scale_reaches_every_running_worker(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    gauge = Gauge()
    workers = [worker_factory(concurrency=1, prefetch=0) for _ in range(3)]
    for w in workers:

        @w.task(name="work")
        async def work() -> None:
            await gauge.run()

    producer, late = workers[0], workers[2]
    with anyio.fail_after(20):
        async with run_worker(workers[0]), run_worker(workers[1]):
            await producer.scale(3)
            for w in workers[:2]:
                await wait_until(_scaled(w, 3))
            tasks = [await producer.enqueue_unsafe("work") for _ in range(6)]
            await gauge.until(lambda g: g.now == 6)
            gauge.release(6)
            for task in tasks:
                assert (await task.result()).success
            # a worker started after the command keeps its own concurrency
            async with run_worker(late):
                await producer.scale(2)
                for w in workers:
                    await wait_until(_scaled(w, 2))
    assert gauge.peak == 6
    with pytest.raises(StreaqError, match="at least 1"):
        await producer.scale(0)
    with pytest.raises(StreaqError, match="at least 1"):
        producer.set_concurrency(0)


def _scaled(worker: Worker[Any], expected: int) -> Callable[[], Awaitable[bool]]:
    """Whether ``worker`` runs with the concurrency ``expected`` (to wait for)."""

    async def reached() -> bool:
        state = worker._run.state
        return state is not None and state.concurrency == expected

    return reached


async def test_a_worker_started_after_a_command_keeps_its_concurrency(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    producer = worker_factory()
    late = worker_factory(concurrency=3)
    with anyio.fail_after(10):
        async with producer:
            await producer.scale(1)
        async with run_worker(late):
            state = late._run.state
            assert state is not None
            assert state.concurrency == late.concurrency == 3
