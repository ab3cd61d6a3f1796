"""The queue snapshot (``streaq info``, the exporter, the web UI) reads the worker's topology."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq._inspect import inspect_worker

from ._support import RunWorker, WorkerFactory

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
