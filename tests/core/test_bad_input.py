"""Bad input becomes a failed result with a readable message; the worker goes on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq._codec import pack_for_lua
from streaq.task import TaskResult
from streaq.types import StreaqError

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio

Call = Callable[..., Coroutine[Any, Any, Any]]


def register_ok(worker: Worker[Any]) -> Callable[[], Coroutine[Any, Any, TaskResult[str]]]:
    """Register a task that succeeds; the returned coroutine function runs it once."""

    @worker.task(name="still_alive")
    async def still_alive() -> str:
        return "alive"

    async def check() -> TaskResult[str]:
        return await (await still_alive.enqueue()).result()

    return check


async def assert_acked(worker: Worker[Any]) -> None:
    """Nothing is left in the stream or its pending list."""
    client = worker._client.redis
    stream = worker.keys.stream(worker.priorities[0])
    assert await client.execute("XLEN", stream) == 0
    pending = await client.execute("XPENDING", stream, "g")
    assert pending[0] == 0


async def test_unknown_task_name(worker: Worker[Any], run_worker: RunWorker) -> None:
    alive = register_ok(worker)
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await worker.enqueue_unsafe("nope", 1, x=2)
            res = await task.result()
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "nope" in str(res.exception)
            assert res.fn_name == "nope"
            assert (await alive()).result == "alive"
            await assert_acked(worker)


async def test_wrong_argument_types(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    alive = register_ok(worker)
    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await add.enqueue("x", 1)  # type: ignore[arg-type]
            res = await task.result()
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "'a'" in str(res.exception)
            assert (await alive()).result == "alive"
            await assert_acked(worker)


async def test_wrong_arity_rejected_at_enqueue(worker: Worker[Any]) -> None:
    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with worker:
        with pytest.raises(StreaqError):
            await add.enqueue(1)  # type: ignore[call-arg]


async def _inject(
    worker: Worker[Any], fn_name: str, payload: bytes, task_id: str | None = None, **extra: Any
) -> str:
    """XADD a raw message as the server library would, and index it in the ``t`` hash."""
    client = worker._client.redis
    task_id = task_id or uuid.uuid4().hex
    priority = worker.priorities[0]
    fields: dict[str, Any] = {
        "i": task_id,
        "f": fn_name,
        "d": payload,
        "c": 1_700_000_000_000,
        "l": 300_000,
        **extra,
    }
    flat = [item for pair in fields.items() for item in pair]
    msgid = await client.execute("XADD", worker.keys.stream(priority), "*", *flat)
    record = pack_for_lua(["q", priority, bytes(msgid).decode()])
    await client.execute("HSET", f"{worker.keys.prefix}t", task_id, record)
    return task_id


async def test_garbage_payload(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    alive = register_ok(worker)
    async with run_worker(worker):
        with anyio.fail_after(10):
            task_id = await _inject(worker, add.fn_name, b"\xc1garbage")
            res = await worker.result_by_id(task_id)
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "decode" in str(res.exception)
            assert (await alive()).result == "alive"
            await assert_acked(worker)


async def test_tampered_signature(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    worker = worker_factory(signing_secret="right secret")
    forger = worker_factory(signing_secret="wrong secret")

    @worker.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @forger.task(name="add")
    async def forged_add(a: int, b: int) -> int:
        return a + b

    alive = register_ok(worker)
    async with run_worker(worker), forger:
        with anyio.fail_after(10):
            good = await (await add.enqueue(1, 2)).result()
            assert good.result == 3
            task = await forged_add.enqueue(1, 2)
            res = await worker.result_by_id(task.id)
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "signature" in str(res.exception)
            assert (await alive()).result == "alive"
            await assert_acked(worker)


async def test_swapped_signed_payload(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    """A signature covers the task id: a task's signed fields copied to another id are rejected."""
    worker = worker_factory(signing_secret="secret")

    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with run_worker(worker):
        with anyio.fail_after(10):
            codec = worker._client.codec
            payload = codec.encode_call((1, 2), {})
            signed = {"i": "other-id", "f": add.fn_name, "d": payload, "c": 1, "l": 300_000}
            signature = codec.sign_task(signed)
            task_id = await _inject(worker, add.fn_name, payload, s=signature)
            res = await worker.result_by_id(task_id)
            assert not res.success
            assert "signature" in str(res.exception)


async def test_unserializable_return(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.task
    async def weird() -> object:
        return object()

    alive = register_ok(worker)
    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await weird.enqueue()).result()
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            assert "serializ" in str(res.exception)
            assert (await alive()).result == "alive"
            await assert_acked(worker)


async def test_middleware_raises(worker: Worker[Any], run_worker: RunWorker) -> None:
    @worker.middleware
    def broken(call: Call) -> Call:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if broken.context.fn_name == "fragile":
                raise RuntimeError("middleware broke")
            return await call(*args, **kwargs)

        return wrapper

    @worker.task(name="fragile")
    async def fragile() -> int:
        return 1

    alive = register_ok(worker)
    async with run_worker(worker):
        with anyio.fail_after(10):
            res = await (await fragile.enqueue()).result()
            assert not res.success
            assert isinstance(res.exception, RuntimeError)
            assert "middleware broke" in str(res.exception)
            assert (await alive()).result == "alive"
            await assert_acked(worker)
