"""Encryption (``encryption_key``): what Redis holds of arguments, results and errors is
ciphertext; altered or foreign ciphertexts are refused; keys rotate. See ``streaq._encryption``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq._encryption import DecryptionError
from streaq.task import TaskStatus
from streaq.types import StreaqError, StreaqRetry

from ._support import RunWorker, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio

SECRET = "an encryption secret of enough entropy"
MARKER = "needle-in-the-haystack"


async def _stored(worker: Worker[Any]) -> bytes:
    """Every value of the queue's keys (streams, index, results), concatenated."""
    redis = worker._client.redis
    blob = b""
    for key in await redis.execute("KEYS", f"{worker.keys.prefix}*"):
        kind = await redis.execute("TYPE", key)
        if kind in (b"string", "string"):
            blob += bytes(await redis.execute("GET", key) or b"")
        elif kind in (b"stream", "stream"):
            for _, flat in await redis.execute("XRANGE", key, "-", "+"):
                blob += b"".join(bytes(v) for v in flat)
        elif kind in (b"hash", "hash"):
            flat = await redis.execute("HGETALL", key)
            items = (
                flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
            )
            blob += b"".join(bytes(k) + bytes(v) for k, v in items)
    return blob


@pytest.mark.parametrize("signed", [False, True])
async def test_payloads_are_ciphertext_at_rest(
    worker_factory: WorkerFactory, run_worker: RunWorker, signed: bool
) -> None:
    worker = worker_factory(encryption_key=SECRET, signing_secret="s" if signed else None)
    release = anyio.Event()
    attempts: list[int] = []

    @worker.task
    async def echo(text: str) -> str:
        await release.wait()
        return text + "!"

    @worker.task
    async def boom(text: str) -> None:
        raise ValueError(text)

    @worker.task
    async def flaky(text: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise StreaqRetry(delay=timedelta(seconds=60))
        return text

    async with run_worker(worker):
        with anyio.fail_after(10):
            waiting = await echo.enqueue(MARKER)
            retried = await flaky.enqueue(MARKER)
            failed = await boom.enqueue(MARKER)
            assert str((await failed.result()).exception) == MARKER
            # the retry is stored, with its last error
            await wait_for_status(retried, TaskStatus.SCHEDULED)
            # the arguments (queued), the error (stored result) and the last error (retry)
            assert MARKER.encode() not in await _stored(worker)
            release.set()
            assert (await waiting.result()).result == MARKER + "!"
            assert MARKER.encode() not in await _stored(worker)
            assert (await retried.info()) is not None


async def test_altered_or_foreign_ciphertexts_are_refused(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(encryption_key=SECRET)
    stranger = worker_factory(encryption_key="another key")
    for registry in (worker, stranger):

        @registry.task(name="echo")
        async def echo(text: str) -> str:
            return text

    async with run_worker(worker), stranger:
        with anyio.fail_after(10):
            # arguments encrypted with a key the worker lacks: dead-lettered, never run
            foreign = await stranger.enqueue_unsafe("echo", "x")
            refused = await worker.result_by_id(foreign.id)
            assert isinstance(refused.exception, StreaqError)
            assert "encrypted" in str(refused.exception)
            [letter] = await worker.dead_letters()
            assert letter.task_id == foreign.id
            # a result whose ciphertext was altered in Redis
            task = await worker.enqueue_unsafe("echo", "y")
            assert (await task.result()).result == "y"
            key = worker.keys.result(task.id)
            record = bytes(await worker._client.redis.execute("GET", key))
            await worker._client.redis.execute("SET", key, record[:-1] + bytes([record[-1] ^ 1]))
            with pytest.raises(DecryptionError):
                await worker.result_by_id(task.id)


async def test_encryption_keys_rotate(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    old = worker_factory(encryption_key=["old", "new"])
    worker = worker_factory(encryption_key=["new", "old"])
    for registry in (old, worker):

        @registry.task(name="double")
        async def double(n: int) -> int:
            return 2 * n

    async with run_worker(worker), old:
        with anyio.fail_after(10):
            from_old = await old.enqueue_unsafe("double", 2)
            assert (await old.result_by_id(from_old.id)).result == 4
            from_new = await worker.enqueue_unsafe("double", 3)
            assert (await old.result_by_id(from_new.id)).result == 6
