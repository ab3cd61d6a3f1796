"""The queue snapshot (``streaq info``, the exporter, the web UI) reads the worker's topology."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq._inspect import inspect_worker
from streaq.task import TaskStatus

from ._support import RunWorker, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio


async def test_snapshot_of_a_busy_queue(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """One task running, two queued, one delayed: the snapshot counts each where it is."""
    worker = worker_factory(concurrency=1, prefetch=0, priorities=["low", "high"])
    started = anyio.Event()
    release = anyio.Event()

    @worker.task
    async def sleeper(n: int) -> int:
        started.set()
        await release.wait()
        return n

    async with run_worker(worker):
        with anyio.fail_after(10):
            running = await sleeper.enqueue(0).start(priority="high")
            await started.wait()
            await wait_for_status(running, TaskStatus.RUNNING)
            queued = [await sleeper.enqueue(n).start(priority="low") for n in (1, 2)]
            delayed = await sleeper.enqueue(3).start(delay=3600)
            found = await inspect_worker(worker)
            by_priority: dict[str, Any] = {info.name: info for info in found.priorities}
            assert (by_priority["high"].queued, by_priority["high"].running) == (0, 1)
            assert (by_priority["low"].queued, by_priority["low"].running) == (2, 0)
            assert found.delayed == 1
            assert found.queue_name == worker.queue_name
            release.set()
            for task in [running, *queued]:
                assert (await task.result()).success
            assert await delayed.abort() is True


async def test_public_snapshot_finish_times_and_abort_requested(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """``Worker.inspect``, ``Worker.finish_times`` and ``Worker.abort_requested``: what the web UI
    and the Prometheus exporter use instead of reaching inside the worker."""
    worker = worker_factory(concurrency=2)
    started = anyio.Event()
    release = anyio.Event()

    @worker.task
    async def ok() -> int:
        return 1

    @worker.task
    async def boom() -> None:
        raise ValueError("boom")

    @worker.task
    async def stubborn() -> None:
        started.set()
        with anyio.CancelScope(shield=True):  # an abort cannot stop it: it stays requested
            await release.wait()

    @worker.cron("0 0 * * *", name="nightly")
    async def nightly() -> None:
        pass

    async with run_worker(worker):
        with anyio.fail_after(15):
            await (await ok.enqueue()).result()
            await (await boom.enqueue()).result()
            times = await worker.finish_times()
            assert sorted(success for _, success in times) == [False, True]
            assert all(finish > 0 for finish, _ in times)

            found = await worker.inspect()
            assert found.queue_name == worker.queue_name
            (job,) = found.crons
            assert job.next_task_id == f"cron:nightly:{job.next_fire_ms}"

            held = await stubborn.enqueue()
            await started.wait()
            assert await worker.abort_requested(held.id) is False
            assert await worker.abort_by_id(held.id, timeout=0.2) is False
            assert await worker.abort_requested(held.id) is True
            release.set()
            await held.result()
            assert await worker.abort_requested(held.id) is False
