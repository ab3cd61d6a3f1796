"""Code written for streaq 7.2 runs unchanged: the behaviours its users and tests rely on.

Each test mirrors what streaq 7.2 does (hashable tasks, ``StreaqError`` for unlistable statuses,
lenient serializers, ``worker.redis`` and ``worker.prefix``, ``redis_pool`` and
``redis_kwargs={"decode_responses": True}``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import msgspec
import pytest

from streaq import Worker
from streaq.task import Task, TaskStatus
from streaq.types import StreaqError

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio


# hashable tasks


async def test_tasks_are_hashable_by_id(
    worker: Worker[Any], run_worker: RunWorker, backend_name: str
) -> None:
    @worker.task
    async def double(n: int) -> int:
        return 2 * n

    async with run_worker(worker):
        with anyio.fail_after(10):
            tasks = [double.enqueue(n) for n in range(3)]
            if backend_name == "asyncio":
                # 7.2's idiom: gather needs hashable awaitables
                await asyncio.gather(*tasks)
            else:

                async def enqueue(task: Task[[int], int]) -> None:
                    await task

                async with anyio.create_task_group() as tg:
                    for task in tasks:
                        tg.start_soon(enqueue, task)
            by_task = {task: (await task.result()).result for task in tasks}
    assert by_task == {tasks[0]: 0, tasks[1]: 2, tasks[2]: 4}
    assert len(set(tasks)) == 3
    # a second handle of the same task (same id) is the same set member
    again = double.enqueue(0)
    again.id = tasks[0].id
    assert again == tasks[0]
    assert hash(again) == hash(tasks[0])
    assert again in set(tasks)
    assert again != double.enqueue(0)


# get_tasks_by_status


@pytest.mark.parametrize("status", [TaskStatus.NOT_FOUND, "bogus"])
async def test_unlistable_status_is_a_streaq_error(worker: Worker[Any], status: Any) -> None:
    async with worker:
        with pytest.raises(StreaqError, match="cannot list tasks with status"):
            await worker.get_tasks_by_status(status)


# serializers


class Point:
    """A type msgpack cannot encode without help."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def _encode_point(obj: Any) -> Any:
    if isinstance(obj, Point):
        return [obj.x, obj.y]
    raise NotImplementedError(type(obj))


async def test_serializer_alone_decodes_with_msgpack(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    # 7.2 accepts a serializer without a deserializer; the default (msgpack) decodes
    worker = worker_factory(serializer=msgspec.msgpack.Encoder(enc_hook=_encode_point).encode)

    @worker.task
    async def norm(point: list[int]) -> int:
        return abs(point[0]) + abs(point[1])

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await norm.enqueue(Point(3, -4))  # type: ignore[arg-type]
            result = await task.result()
    assert result.result == 7


class SerializerFailure(Exception):
    pass


def _failing_serializer(value: Any) -> bytes:
    raise SerializerFailure("cannot serialize this")


async def test_serializer_errors_are_wrapped_naming_the_task(
    worker_factory: WorkerFactory,
) -> None:
    worker = worker_factory(serializer=_failing_serializer, deserializer=msgspec.msgpack.decode)

    @worker.task
    async def greet(name: str) -> str:
        return f"hello {name}"

    async with worker:
        with pytest.raises(StreaqError, match="greet") as info:
            await greet.enqueue("world")
        assert isinstance(info.value.__cause__, SerializerFailure)
        assert await worker.queue_size() == 0


async def test_signed_serializer_must_return_bytes(worker_factory: WorkerFactory) -> None:
    worker = worker_factory(
        serializer=lambda value: msgspec.json.encode(value).decode(),  # str, not bytes
        deserializer=msgspec.json.decode,
        signing_secret="s3cret",
    )

    @worker.task
    async def greet(name: str) -> str:
        return f"hello {name}"

    async with worker:
        with pytest.raises(StreaqError, match=r"greet.*must return bytes"):
            await greet.enqueue("world")
        assert await worker.queue_size() == 0
