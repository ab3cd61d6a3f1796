"""Liveness off the event loop: a task blocking the loop keeps its lease and is reported."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import anyio
import pytest

from streaq import Worker

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio

BLOCK_SECONDS = 3


def _register(worker: Worker[Any], runs: list[str]) -> Any:
    @worker.task(name="blocker")
    async def blocker() -> str:
        runs.append(worker.id)
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 -- blocking the loop is the point
        return "done"

    return blocker


def _run_in_thread(worker: Worker[Any], backend: str, stop: threading.Event) -> threading.Thread:
    """Run ``worker`` on its own event loop in a thread until ``stop`` is set."""
    started = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            started.set()
            await anyio.to_thread.run_sync(stop.wait)
            tg.cancel_scope.cancel()

    thread = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend})
    thread.start()
    if not started.wait(10):
        raise TimeoutError("the second worker did not start")
    return thread


async def test_blocked_loop_keeps_its_task(
    worker_factory: WorkerFactory,
    run_worker: RunWorker,
    backend_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task blocking its loop 3x idle_timeout runs once, with another worker reclaiming."""
    caplog.set_level(logging.WARNING, logger="streaq")
    runs: list[str] = []
    first = worker_factory(idle_timeout=1, concurrency=1)
    second = worker_factory(idle_timeout=1, concurrency=1)
    blocker = _register(first, runs)
    _register(second, runs)
    stop = threading.Event()
    thread = await anyio.to_thread.run_sync(_run_in_thread, second, backend_name, stop)
    try:
        async with run_worker(first):
            with anyio.fail_after(30):
                task = await blocker.enqueue()
                res = await task.result()
                assert res.success, res.exception
                assert res.result == "done"
                # the message left the stream with the result: nobody can run it again now
                assert len(runs) == 1
                assert res.tries == 1
    finally:
        stop.set()
        await anyio.to_thread.run_sync(thread.join)
    assert len(runs) == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    blocked = [m for m in messages if re.search(r"blocked for \d+\.\d s", m)]
    assert any("has been blocked" in m for m in blocked), messages
    # once the loop runs again, the whole duration is reported
    [after] = [m for m in blocked if "was blocked" in m]
    seconds = float(re.findall(r"blocked for (\d+\.\d) s", after)[0])
    assert BLOCK_SECONDS - 0.5 <= seconds <= BLOCK_SECONDS + 2
    assert not any("taken over" in m or "reclaimed" in m for m in messages)


async def test_lease_thread_stops_with_the_run(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def noop() -> None:
        pass

    name = f"streaq-leases-{worker.id}"
    async with run_worker(worker):
        with anyio.fail_after(10):
            await (await noop.enqueue()).result()
            assert any(t.name == name for t in threading.enumerate())
    # joined before the run returned
    assert not any(t.name == name for t in threading.enumerate())
