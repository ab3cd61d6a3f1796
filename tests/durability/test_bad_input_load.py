"""Garbage, truncated and oversized payloads among good tasks: each bad one fails, the rest run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from streaq._codec import pack_for_lua
from streaq.task import Task

from .app import App, build
from .conftest import delete_keys
from .test_security import running

pytestmark = pytest.mark.anyio

GOOD = 400


@pytest.fixture
def app(redis_url: str, queue_name: str, backend_name: str) -> Iterator[App]:
    try:
        yield build(redis_url, queue_name, backend=backend_name, record=False, idle_timeout=5)
    finally:
        delete_keys(redis_url, f"streaq:{{{queue_name}}}:*")


async def _inject(app: App, fn_name: str, payload: bytes) -> str:
    """XADD a raw message as the server library would, and index it in the ``t`` hash."""
    worker = app.worker
    client = worker._client.redis
    task_id = uuid.uuid4().hex
    priority = worker.priorities[0]
    msgid = await client.execute(
        "XADD", worker.keys.stream(priority), "*", "i", task_id, "f", fn_name, "d", payload,
        "c", 1_700_000_000_000, "l", 300_000,
    )  # fmt: skip
    record = pack_for_lua(["q", priority, bytes(msgid).decode()])
    await client.execute("HSET", f"{worker.keys.prefix}t", task_id, record)
    return task_id


async def test_bad_payloads_among_good_tasks(app: App) -> None:
    async with app.worker, running(app):
        good_payload = app.worker._client.codec.encode_call((1, 0.0), {})
        await _serve_bad_input(app, good_payload)


async def _serve_bad_input(app: App, good_payload: bytes) -> None:
    bad_payloads = [
        b"\xc1garbage",
        good_payload[: len(good_payload) // 2],  # truncated
        b"",
        os.urandom(5 * 1024 * 1024),  # oversized noise
        b"\x92" + b"\xc4" + b"\x00" * 3,  # a header promising more than there is
    ]
    with anyio.fail_after(60):
        good: list[Task[Any, Any]] = []
        bad: list[str] = []
        for wave in range(4):
            batch = [app.plain.enqueue(wave * 1000 + n, 0) for n in range(GOOD // 4)]
            await app.worker.enqueue_many(batch)
            good += batch
            for payload in bad_payloads:
                bad.append(await _inject(app, "plain", payload))
            bad.append(await _inject(app, "no_such_task", good_payload))
        for task_id in bad:
            res = await app.worker.result_by_id(task_id)
            assert not res.success, task_id
        for task in good:
            assert (await task.result()).success
        # the worker is still up and serving
        assert app.worker.running() >= 0
        assert (await (await app.plain.enqueue(-1, 0)).result()).result == -1
        assert await app.worker.queue_size() == 0
