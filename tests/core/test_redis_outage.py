"""A worker survives its Redis going away: it reconnects and goes on running tasks; and the limits
that notice a vanished Redis do not misfire on a healthy one."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from redis import exceptions as rex
from servers import ServerFactory

from streaq import Worker
from streaq._runtime._reader import BLOCK_SECONDS

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio


async def test_worker_continues_after_a_redis_restart(
    redis_server: ServerFactory, queue_name: str, run_worker: RunWorker
) -> None:
    server = redis_server()
    worker: Worker[Any] = Worker(
        redis_url=server.url, queue_name=queue_name, handle_signals=False, idle_timeout=5
    )

    @worker.task
    async def double(x: int) -> int:
        return 2 * x

    async with run_worker(worker):
        first = await double.enqueue(1)
        assert (await first.result(timeout=10)).result == 2
        server.restart()
        # the server kept nothing: the worker must recreate its group and reload its library
        with anyio.fail_after(20):
            while True:
                try:
                    task = await double.enqueue(21)
                    result = await task.result(timeout=2)
                    break
                except (rex.ConnectionError, TimeoutError):
                    await anyio.sleep(0.2)
        assert result.result == 42


async def test_unreachable_redis_is_a_clear_error(queue_name: str) -> None:
    worker: Worker[Any] = Worker(redis_url="redis://127.0.0.1:1", queue_name=queue_name)
    with pytest.raises(rex.ConnectionError, match=r"127\.0\.0\.1:1"):
        async with worker:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("priorities", [["normal"], ["low", "high"]], ids=["one", "two"])
async def test_blocking_reads_outlast_a_short_socket_timeout(
    worker_factory: WorkerFactory,
    run_worker: RunWorker,
    priorities: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # each blocking read waits BLOCK_SECONDS, four times the socket timeout
    worker = worker_factory(
        redis_kwargs={"socket_timeout": BLOCK_SECONDS / 4}, priorities=priorities
    )

    @worker.task
    async def echo(x: int) -> int:
        return x

    caplog.set_level(logging.WARNING, logger="streaq")
    async with run_worker(worker):
        # idle through more than one blocking read: the precondition, not a wait for a result
        await anyio.sleep(BLOCK_SECONDS * 1.25)
        task = await echo.enqueue(7)
        assert (await task.result(timeout=5)).result == 7
    problems = [r.getMessage() for r in caplog.records if r.name == "streaq"]
    assert problems == []
