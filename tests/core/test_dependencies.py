"""Dependencies (``after=``), pipelines (``then``, ``|``) and fallbacks (``^``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.task import Task, TaskStatus
from streaq.types import StreaqError

from ._support import RunWorker

pytestmark = pytest.mark.anyio


async def test_after_waits(worker: Worker[Any], run_worker: RunWorker) -> None:
    release = anyio.Event()
    order: list[str] = []

    @worker.task
    async def first() -> None:
        await release.wait()
        order.append("first")

    @worker.task
    async def second() -> None:
        order.append("second")

    async with run_worker(worker):
        with anyio.fail_after(10):
            a = await first.enqueue()
            b = await second.enqueue().start(after=a.id)
            assert await b.status() == TaskStatus.SCHEDULED
            info = await b.info()
            assert info is not None
            assert info.dependencies == {a.id}
            a_info = await a.info()
            assert a_info is not None
            assert a_info.dependents == {b.id}
            await anyio.sleep(0.1)  # give the worker a chance to (wrongly) run b early
            assert order == []
            release.set()
            assert (await b.result()).success
    assert order == ["first", "second"]


async def test_failed_dependency_fails_dependents(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    ran: list[str] = []

    @worker.task
    async def broken() -> None:
        raise ValueError("broken")

    @worker.task
    async def child(label: str) -> None:
        ran.append(label)

    async with worker:
        a = await broken.enqueue()
        b = await child.enqueue("b").start(after=a.id)
        c = await child.enqueue("c").start(after=[b.id])
        async with run_worker(worker):
            with anyio.fail_after(10):
                ra, rb, rc = await a.result(), await b.result(), await c.result()
                # a dependency that failed already fails a new dependent at once
                d = await child.enqueue("d").start(after=a.id)
                rd = await d.result()
    assert isinstance(ra.exception, ValueError)
    for res in (rb, rc, rd):
        assert not res.success
        assert isinstance(res.exception, StreaqError)
        assert "dependency" in str(res.exception)
    assert ran == []


async def test_unknown_dependency(worker: Worker[Any]) -> None:
    @worker.task
    async def child() -> None:
        pass

    async with worker:
        with pytest.raises(StreaqError, match="unknown dependency"):
            await child.enqueue().start(after="does-not-exist")
        assert await worker.queue_size() == 0


async def test_pipelines(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def double(x: int) -> int:
        return 2 * x

    @worker.task
    def split(x: int) -> tuple[int, int]:
        return x, x + 1

    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    @worker.task
    async def scale(x: int, factor: int = 1) -> int:
        return x * factor

    async with run_worker(worker):
        with anyio.fail_after(10):
            piped = await (double.enqueue(1) | scale)
            assert (await piped.result()).result == 2
            then = await double.enqueue(2).then(scale, factor=3)
            assert (await then.result()).result == 12
            # a 3-link chain awaited as one; the tuple is unpacked into add(a, b)
            # (typed as Task[Any, Any]: task.py has no overload of `|` unpacking a tuple)
            head: Task[Any, Any] = double.enqueue(3) | split
            chain = await (head | add)
            res = await chain.result()
            assert res.result == 13
            assert res.fn_name == add.fn_name


async def test_fallbacks(worker: Worker[Any], run_worker: RunWorker) -> None:
    calls: list[tuple[str, int]] = []

    @worker.task
    async def risky(x: int) -> int:
        calls.append(("risky", x))
        if x < 0:
            raise ValueError("negative")
        return x

    @worker.task
    async def fallback(x: int) -> int:
        calls.append(("fallback", x))
        return -x

    async with run_worker(worker):
        with anyio.fail_after(10):
            failed = await risky.enqueue(-5).otherwise(fallback)
            rf = await failed.result()
            assert rf.success
            assert rf.result == 5
            ok = await (risky.enqueue(7) ^ fallback)
            ro = await ok.result()
            assert ro.success
            assert ro.result == 7
    assert ("fallback", -5) in calls
    assert ("fallback", 7) not in calls
