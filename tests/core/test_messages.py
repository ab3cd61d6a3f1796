"""What a user reads: timeouts that say which task and which limit, one log line per failure
(tracebacks only for errors the task's own code raised), durations on finish lines."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from streaq import Worker

from ._support import RunWorker

pytestmark = pytest.mark.anyio


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


async def test_a_task_timeout_says_which_task_and_limit(
    worker: Worker[Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    @worker.task(timeout=1)
    async def slow() -> None:
        await anyio.sleep(30)

    caplog.set_level(logging.INFO, "streaq")
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await slow.enqueue()
            result = await task.result()
    assert isinstance(result.exception, TimeoutError)
    message = str(result.exception)
    assert task.id in message
    assert "1 s" in message
    assert "timeout" in message
    [line] = _lines(caplog, f"× {task.id} failed")
    assert line.exc_info is None  # one line, not anyio's traceback
    assert "after 1." in line.getMessage()


async def test_a_user_timeout_error_keeps_its_traceback(
    worker: Worker[Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    @worker.task
    async def own() -> None:
        raise TimeoutError("the API did not answer")

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await own.enqueue()
            result = await task.result()
    assert str(result.exception).startswith("the API did not answer")
    [line] = _lines(caplog, f"× {task.id} failed")
    assert line.exc_info is not None


async def test_waiting_too_long_for_a_result_says_for_what(worker: Worker[Any]) -> None:
    @worker.task
    async def never_run() -> None: ...

    async with worker:
        task = await never_run.enqueue()
        with pytest.raises(TimeoutError, match=f"no result for task {task.id} within 0.2 s"):
            await task.result(timeout=0.2)


async def test_argument_errors_and_aborts_are_logged(
    worker: Worker[Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()

    @worker.task
    async def typed(n: int) -> int:
        return n

    @worker.task
    async def forever() -> None:
        started.set()
        await anyio.sleep(60)

    caplog.set_level(logging.INFO, "streaq")
    async with run_worker(worker):
        with anyio.fail_after(10):
            wrong = await worker.enqueue_unsafe(typed.fn_name, "not a number")
            assert not (await wrong.result()).success
            aborted = await forever.enqueue()
            await started.wait()
            assert await aborted.abort()
    [argument] = _lines(caplog, f"× {wrong.id} failed")
    assert "'n'" in argument.getMessage()
    assert argument.levelno == logging.ERROR
    [abort] = _lines(caplog, f"× {aborted.id} aborted")
    assert abort.levelno == logging.INFO


async def test_finish_lines_carry_the_duration(
    worker: Worker[Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    @worker.task
    async def quick() -> int:
        return 1

    caplog.set_level(logging.INFO, "streaq")
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await quick.enqueue()
            await task.result()
    [line] = _lines(caplog, f"■ {task.id} ← 1")
    assert line.getMessage().endswith(" ms)")
