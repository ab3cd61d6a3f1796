"""Redis crashes, disappears or stalls under a workload: workers wait, reconnect, lose nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis import exceptions as rex
from servers import RedisServer

from streaq.task import Task, TaskResult

from .app import App, build
from .conftest import ProcessFactory

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 600
#: warning lines per second and worker process allowed while Redis is unreachable
MAX_WARNINGS_PER_SECOND = 10.0


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway server persisting every write (AOF, ``appendfsync always``)."""
    server = RedisServer(
        tmp_path / "aof-server",
        appendonly=True,
        extra_args=["--appendfsync", "always"],
    )
    try:
        server.start()
        yield server
    finally:
        server.stop(kill=True)


async def _enqueue(app: App, count: int) -> list[Task[Any, Any]]:
    tasks: list[Task[Any, Any]] = [app.plain.enqueue(n, 0.01) for n in range(count)]
    await app.worker.enqueue_many(tasks)
    return tasks


async def _results(tasks: list[Task[Any, Any]], timeout: float) -> list[TaskResult[Any]]:
    """Every task's result; the producer's own connections may need to reconnect first."""
    out: list[TaskResult[Any]] = []
    with anyio.fail_after(timeout):
        for task in tasks:
            while True:
                try:
                    out.append(await task.result(timeout=timeout))
                    break
                except (rex.ConnectionError, rex.TimeoutError):
                    await anyio.sleep(0.1)
    return out


async def _wait_done(app: App, tasks: list[Task[Any, Any]], fraction: float) -> None:
    """Wait until ``fraction`` of ``tasks`` have results."""
    client = app.worker._client.redis
    keys = [app.worker.keys.result(t.id) for t in tasks]
    while True:
        if int(await client.execute("EXISTS", *keys)) >= fraction * len(tasks):
            return
        await anyio.sleep(0.02)


async def test_aof_restart_mid_workload(
    aof_server: RedisServer, worker_processes: ProcessFactory, backend_name: str, queue_name: str
) -> None:
    app = build(aof_server.url, queue_name, backend=backend_name)
    procs = worker_processes(aof_server.url, queue_name)
    async with app.worker:
        tasks = await _enqueue(app, TASKS)
        procs.start()
        procs.start()
        with anyio.fail_after(30):
            await _wait_done(app, tasks, 0.3)
        aof_server.restart(kill=True)  # a crash: only the AOF survives
        results = await _results(tasks, 60)
    assert all(r.success for r in results)
    assert [r.result for r in results] == list(range(TASKS))
    assert len(procs.alive()) == 2, procs.logs()[-3000:]


async def test_redis_unreachable_for_a_while(
    aof_server: RedisServer, worker_processes: ProcessFactory, backend_name: str, queue_name: str
) -> None:
    app = build(aof_server.url, queue_name, backend=backend_name)
    procs = worker_processes(aof_server.url, queue_name)
    async with app.worker:
        tasks = await _enqueue(app, TASKS)
        procs.start()
        with anyio.fail_after(30):
            await _wait_done(app, tasks, 0.3)
        aof_server.stop()
        down = time.monotonic()
        await anyio.sleep(5)
        outage = time.monotonic() - down
        logs_during = procs.logs()
        aof_server.start()  # same port, same AOF directory
        results = await _results(tasks, 60)
    assert [r.result for r in results] == list(range(TASKS))
    assert len(procs.alive()) == 1, procs.logs()[-3000:]
    warnings = [line for line in logs_during.splitlines() if line.startswith("[WARNING]")]
    assert warnings, "no log line says Redis is unreachable"
    assert any(re.search(r"retrying|cannot", line) for line in warnings)
    rate = len(warnings) / outage
    print(f"\n[durability/{backend_name}] outage {outage:.1f}s: {len(warnings)} warning lines")
    assert rate <= MAX_WARNINGS_PER_SECOND, "\n".join(warnings[:40])


async def test_stalled_connection_times_out(
    aof_server: RedisServer, backend_name: str, queue_name: str
) -> None:
    app = build(
        aof_server.url, queue_name, backend=backend_name, redis_kwargs={"socket_timeout": 1}
    )
    async with app.worker:
        await app.plain.enqueue(1, 0)
        aof_server.pause()
        try:
            with anyio.fail_after(10), pytest.raises(rex.TimeoutError):
                await app.plain.enqueue(2, 0)
        finally:
            aof_server.resume()
