"""Round trips, typed results, result fields, status/info, and failures as data."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import msgspec
import pytest

from streaq import Worker
from streaq.task import TaskStatus
from streaq.types import RemoteTaskError, StreaqError

from ._support import RunWorker

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Box(msgspec.Struct):
    label: str
    items: list[int]


class CustomError(Exception):
    pass


async def test_async_and_sync_round_trip(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    @worker.task
    def mul(a: int, b: int) -> int:
        return a * b

    async with run_worker(worker):
        with anyio.fail_after(10):
            t1 = await add.enqueue(2, 3)
            t2 = await mul.enqueue(4, b=5)
            r1 = await t1.result()
            r2 = await t2.result()
    assert r1.success
    assert r1.result == 5
    assert r2.success
    assert r2.result == 20


async def test_typed_results(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def point(x: int) -> Point:
        return Point(x, x + 1)

    @worker.task
    def box(label: str) -> Box:
        return Box(label, [1, 2, 3])

    @worker.task
    async def pair(a: int) -> tuple[int, str]:
        return a, str(a)

    @worker.task
    async def untyped_pair(a: int):  # type: ignore[no-untyped-def]
        return (a, a)

    async with run_worker(worker):
        with anyio.fail_after(10):
            rp = await (await point.enqueue(1)).result()
            rb = await (await box.enqueue("b")).result()
            rt = await (await pair.enqueue(7)).result()
            ru = await (await untyped_pair.enqueue(2)).result()
    assert rp.result == Point(1, 2)
    assert type(rp.result) is Point
    assert rb.result == Box("b", [1, 2, 3])
    assert type(rb.result) is Box
    assert rt.result == (7, "7")
    assert type(rt.result) is tuple
    assert ru.result == (2, 2)
    assert type(ru.result) is tuple


async def test_result_fields(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def echo(v: str) -> str:
        return v

    @worker.task
    async def boom() -> None:
        raise ValueError("bad")

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await echo.enqueue("hi")
            res = await task.result()
            failed = await (await boom.enqueue()).result()
    assert res.task_id == task.id
    assert res.fn_name == echo.fn_name
    assert res.success is True
    assert res.tries == 1
    assert res.worker_id == worker.id
    assert res.result == "hi"
    # times are milliseconds since the epoch and ordered
    assert res.created_time > 1_600_000_000_000
    assert res.created_time <= res.enqueue_time <= res.start_time <= res.finish_time
    assert res.finish_time - res.created_time < 10_000
    with pytest.raises(StreaqError):
        _ = res.exception
    assert failed.success is False
    assert isinstance(failed.exception, ValueError)
    with pytest.raises(StreaqError):
        _ = failed.result


async def test_result_timeout(worker: Worker[Any]) -> None:
    @worker.task
    async def never() -> None:
        pass

    async with worker:
        task = await never.enqueue()
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await task.result(timeout=0.2)


async def test_status_and_info(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def add(a: int, b: int = 0) -> int:
        return a + b

    async with worker:
        assert await worker.queue_size() == 0
        task = await add.enqueue(1, b=2)
        assert await task.status() == TaskStatus.QUEUED
        assert await worker.status_by_id("no-such-task") == TaskStatus.NOT_FOUND
        assert await worker.info_by_id("no-such-task") is None
        info = await task.info()
        assert info is not None
        assert info.task_id == task.id
        assert info.fn_name == add.fn_name
        assert info.args == (1,)
        assert info.kwargs == {"b": 2}
        assert info.status == TaskStatus.QUEUED
        assert await worker.queue_size() == 1
        assert await worker.queue_size(include_scheduled=False) == 1
        await add.enqueue(3)
        assert await worker.queue_size() == 2
        async with run_worker(worker):
            with anyio.fail_after(10):
                res = await task.result()
            assert res.result == 3
            assert await task.status() == TaskStatus.DONE
            assert await task.info() is None


async def test_failures_are_data(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def value_error() -> None:
        raise ValueError("nope")

    @worker.task
    def custom() -> None:
        raise CustomError("mine")

    @worker.task
    async def ok() -> str:
        return "fine"

    async with run_worker(worker):
        with anyio.fail_after(10):
            r1 = await (await value_error.enqueue()).result()
            r2 = await (await custom.enqueue()).result()
            r3 = await (await ok.enqueue()).result()
    assert not r1.success
    assert isinstance(r1.exception, ValueError)
    assert "nope" in str(r1.exception)
    assert not r2.success
    exc = r2.exception
    assert isinstance(exc, RemoteTaskError)
    text = str(exc) + repr(exc.args)
    assert "CustomError" in text
    assert "mine" in text
    assert "Traceback" in text or any("Traceback" in n for n in getattr(exc, "__notes__", []))
    assert r3.success
    assert r3.result == "fine"
    assert worker.counters["failed"] == 2
    assert worker.counters["completed"] == 1
