"""At-least-once delivery, burst mode, clean cancellation, and many concurrent waiters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import Process

from streaq import Worker
from streaq.task import TaskResult, TaskStatus
from streaq.types import StreaqError

from ._support import RunWorker, Topology, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio

WORKER_MODULE = """
import json
import os

import anyio

from streaq import Worker

worker = Worker(
    **json.loads(os.environ["STREAQ_TEST_CONNECTION"]),
    queue_name=os.environ["STREAQ_TEST_QUEUE"],
    idle_timeout=1,
    grace_period=int(os.environ.get("STREAQ_TEST_GRACE", "0")),
)


@worker.task(name="blocker")
async def blocker(marker: str) -> int:
    with open(marker, "a") as f:
        f.write(f"{blocker.context.tries}\\n")
    await anyio.sleep_forever()
    return 0


@worker.task(name="once", max_tries=1)
async def once(marker: str) -> int:
    with open(marker, "a") as f:
        f.write("once\\n")
    await anyio.sleep_forever()
    return 0


@worker.task(name="finishes")
async def finishes(marker: str) -> str:
    with open(marker, "a") as f:
        f.write("finishes\\n")
    await anyio.sleep(0.5)
    return "finished in grace"
"""


async def _wait_for_lines(path: Path, count: int, proc: Process) -> None:
    """Wait until the subprocess' tasks have written ``count`` lines to ``path``."""
    apath = anyio.Path(path)
    while True:
        assert proc.returncode is None, "the worker subprocess exited early"
        if await apath.exists() and len((await apath.read_text()).split()) >= count:
            return
        await anyio.sleep(0.05)


def _subprocess_env(tmp_path: Path, topology: Topology, queue_name: str) -> dict[str, str]:
    (tmp_path / "subworker.py").write_text(textwrap.dedent(WORKER_MODULE))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    # the subprocess worker reaches Redis the way the test's workers do, on every topology
    env["STREAQ_TEST_CONNECTION"] = json.dumps(topology.worker_options)
    env["STREAQ_TEST_QUEUE"] = queue_name
    return env


async def _start_subworker(tmp_path: Path, env: dict[str, str]) -> Process:
    return await anyio.open_process(
        [sys.executable, "-m", "streaq", "run", "subworker:worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killed_worker_task_is_rerun(
    tmp_path: Path,
    topology: Topology,
    clean_queue: str,
    worker_factory: WorkerFactory,
    run_worker: RunWorker,
) -> None:
    env = _subprocess_env(tmp_path, topology, clean_queue)
    marker = tmp_path / "started"
    worker = worker_factory(idle_timeout=1)

    @worker.task(name="blocker")
    async def blocker(marker: str) -> int:
        return blocker.context.tries

    @worker.task(name="once", max_tries=1)
    async def once(marker: str) -> int:
        return once.context.tries

    async with worker:
        task = await blocker.enqueue(str(marker))
        single = await once.enqueue(str(marker))
        proc = await _start_subworker(tmp_path, env)
        async with proc:
            try:
                with anyio.fail_after(20):
                    await _wait_for_lines(marker, 2, proc)
                    await wait_for_status(task, TaskStatus.RUNNING)
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        assert await task.status() == TaskStatus.RUNNING  # its lease has not run out yet
        async with run_worker(worker):
            with anyio.fail_after(15):
                res = await task.result()
                res_single = await single.result()
    assert res.success
    assert res.result == 2
    assert res.tries == 2
    assert res.worker_id == worker.id
    # max_tries=1 opts out of redelivery: the crash is reported, never a second run
    assert not res_single.success
    assert isinstance(res_single.exception, StreaqError)
    assert "max_tries" in str(res_single.exception)
    assert res_single.tries == 1
    assert sorted(marker.read_text().split()) == ["1", "once"]


async def test_sigterm_grace_period(
    tmp_path: Path, topology: Topology, clean_queue: str, worker: Worker[Any]
) -> None:
    env = _subprocess_env(tmp_path, topology, clean_queue)
    env["STREAQ_TEST_GRACE"] = "5"
    marker = tmp_path / "started"

    @worker.task(name="finishes")
    async def finishes(marker: str) -> str:
        return "not here"

    async with worker:
        task = await finishes.enqueue(str(marker))
        proc = await _start_subworker(tmp_path, env)
        async with proc:
            with anyio.fail_after(20):
                await _wait_for_lines(marker, 1, proc)
                proc.send_signal(signal.SIGTERM)
                assert await proc.wait() == 0
        with anyio.fail_after(2):
            res = await task.result()
    assert res.result == "finished in grace"
    assert res.worker_id != worker.id


async def test_burst(worker: Worker[Any]) -> None:
    @worker.task
    async def quick(n: int) -> int:
        return n

    async with worker:
        tasks = [quick.enqueue(n) for n in range(5)]
        await worker.enqueue_many(tasks)
        worker.burst = True
        with anyio.fail_after(15):
            await worker.run_async()
        assert await worker.queue_size() == 0
        assert [(await t.result(timeout=1)).result for t in tasks] == list(range(5))
    assert worker.counters["completed"] == 5


async def test_cancelled_run_hands_tasks_back(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    first = worker_factory(concurrency=1, prefetch=2)
    second = worker_factory(concurrency=4)
    started = anyio.Event()
    release = anyio.Event()

    @first.task(name="job")
    async def job_first(n: int) -> int:
        started.set()
        await anyio.Event().wait()
        return -1

    @second.task(name="job")
    async def job_second(n: int) -> int:
        await release.wait()
        return n

    async with first:
        tasks = [job_first.enqueue(n) for n in range(3)]
        await first.enqueue_many(tasks)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(first.run_async)
                await started.wait()
                assert first.running() == 1
                tg.cancel_scope.cancel()
        # the running task and the two prefetched ones are back in the stream, unclaimed
        assert await first.queue_size(include_scheduled=False) == 3
        for task in tasks:
            assert await task.status() == TaskStatus.QUEUED
    assert first.counters["relinquished"] >= 1
    release.set()
    async with second, run_worker(second):
        with anyio.fail_after(10):
            results = [await second.result_by_id(t.id) for t in tasks]
    assert [r.result for r in results] == [0, 1, 2]
    assert all(r.worker_id == second.id for r in results)


async def test_cancel_while_idle_is_clean(worker: Worker[Any]) -> None:
    @worker.task
    async def nothing() -> None:
        pass

    for _ in range(3):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run_async)
                tg.cancel_scope.cancel()
    with anyio.fail_after(10), anyio.CancelScope() as scope:
        scope.cancel()
        await worker.run_async()
    async with worker:
        assert await worker.queue_size() == 0


async def test_many_concurrent_results(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(concurrency=16)

    @worker.task
    async def square(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        return n * n

    results: dict[int, TaskResult[int]] = {}

    async with run_worker(worker):
        tasks = [square.enqueue(n) for n in range(200)]
        await worker.enqueue_many(tasks)

        async def wait(n: int) -> None:
            results[n] = await tasks[n].result()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(wait, n)
    assert sorted(results) == list(range(200))
    assert all(results[n].result == n * n for n in range(200))


async def test_concurrent_waiters_same_task(worker: Worker[Any], run_worker: RunWorker) -> None:
    release = anyio.Event()

    @worker.task
    async def gated() -> str:
        await release.wait()
        return "done"

    results: list[str] = []
    async with run_worker(worker):
        task = await gated.enqueue()

        async def wait() -> None:
            results.append((await task.result()).result)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(wait)
                await anyio.sleep(0.05)  # let every waiter subscribe before the result exists
                release.set()
    assert results == ["done"] * 50
