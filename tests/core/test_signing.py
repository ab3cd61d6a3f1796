"""Signing (``signing_secret``): every field a worker acts on is signed, results are sealed,
secrets rotate; see ``streaq._signing``.

Tampering is done the way an attacker who can write to Redis would: straight in the stream and the
result keys, with a plain client.
"""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

from streaq import Worker
from streaq._codec import encode
from streaq._signing import SIGNED, SignatureError
from streaq.types import StreaqCancelled, StreaqError, StreaqRetry

from ._support import RunWorker, WorkerFactory
from .test_bad_input import _inject

pytestmark = pytest.mark.anyio

SECRET = "the secret"


def _tampered(field: str, value: Any) -> Any:
    """Another value of the same shape (a field that was absent gets one)."""
    if value is None:
        return b"\x90" if field == "le" else b"7"
    if isinstance(value, int):
        return value + 1
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return raw + b"x"


@pytest.mark.parametrize("field", SIGNED)
async def test_a_tampered_field_is_dead_lettered(
    worker_factory: WorkerFactory, run_worker: RunWorker, field: str
) -> None:
    worker = worker_factory(signing_secret=SECRET)
    runs: list[int] = []

    @worker.task
    async def add(a: int, b: int) -> int:
        runs.append(a + b)
        return a + b

    async with run_worker(worker):
        with anyio.fail_after(10):
            codec = worker._client.codec
            payload = codec.encode_call((1, 2), {})
            fields: dict[str, Any] = {
                "i": "tampered",
                "f": add.fn_name,
                "d": payload,
                "c": 1_700_000_000_000,
                "l": 300_000,
            }
            signature = codec.sign_task(fields)
            fields[field] = _tampered(field, fields.get(field))
            task_id = fields.pop("i")
            if isinstance(task_id, bytes):
                task_id = task_id.decode()
            await _inject(worker, fields.pop("f"), fields.pop("d"), task_id, s=signature, **fields)
            result = await worker.result_by_id(task_id)
            assert isinstance(result.exception, StreaqError)
            assert "signature" in str(result.exception)
            [letter] = await worker.dead_letters()
            assert letter.reason == "invalid signature"
    assert runs == []


async def test_secrets_rotate(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    """The first secret signs, any verifies: processes that already sign with the new secret and
    those still signing with the old one, both knowing both, work together."""
    old_producer = worker_factory(signing_secret=["old", "new"])
    worker = worker_factory(signing_secret=["new", "old"])
    old_only = worker_factory(signing_secret="old")
    stranger = worker_factory(signing_secret="other")
    for registry in (old_producer, worker, stranger, old_only):

        @registry.task(name="double")
        async def double(n: int) -> int:
            return 2 * n

    async with run_worker(worker), old_producer, stranger, old_only:
        with anyio.fail_after(10):
            from_old = await old_producer.enqueue_unsafe("double", 2)
            assert (await old_producer.result_by_id(from_old.id)).result == 4
            from_new = await worker.enqueue_unsafe("double", 3)
            # the result, sealed with "new", verifies where "new" is known...
            assert (await old_producer.result_by_id(from_new.id)).result == 6
            # ...and nowhere else
            with pytest.raises(SignatureError):
                await old_only.result_by_id(from_new.id)
            forged = await stranger.enqueue_unsafe("double", 4)
            rejected = await worker.result_by_id(forged.id)
            assert "signature" in str(rejected.exception)


async def test_forged_results_are_refused(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """A value or a failure written in Redis by someone without the secret is an error for the
    caller; the failures the server decides itself (an abort) are accepted."""
    worker = worker_factory(signing_secret=SECRET)
    started = anyio.Event()

    @worker.task
    async def forever() -> None:
        started.set()
        await anyio.sleep(60)

    async with run_worker(worker):
        with anyio.fail_after(10):
            redis = worker._client.redis
            value = encode(["forever", 1, 1, 0, 1, 2, 1, "w", msgspec.Raw(encode(42))])
            await redis.execute("SET", worker.keys.result("forged-value"), value)
            with pytest.raises(SignatureError):
                await worker.result_by_id("forged-value")
            failure = encode(["ValueError", "builtins", "forged", "", []])
            record = encode(["forever", 1, 1, 2, 1, 2, 1, "w", msgspec.Raw(failure)])
            await redis.execute("SET", worker.keys.result("forged-failure"), record)
            with pytest.raises(SignatureError):
                await worker.result_by_id("forged-failure")
            task = await forever.enqueue()
            await started.wait()
            assert await task.abort()
            assert isinstance((await task.result()).exception, StreaqCancelled)


async def test_retries_repeats_pipelines_and_replays_are_signed_afresh(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    """What a worker or a replay writes back into the stream verifies like what producers wrote."""
    worker = worker_factory(signing_secret=SECRET)
    runs: collections.Counter[str] = collections.Counter()
    second_tick = anyio.Event()

    @worker.task
    async def flaky(n: int) -> int:
        runs["flaky"] += 1
        if flaky.context.tries < 3:
            raise StreaqRetry(delay=timedelta(milliseconds=10))
        return n

    @worker.task
    async def tick() -> None:
        runs["tick"] += 1
        if runs["tick"] >= 2:
            second_tick.set()

    @worker.task
    async def inc(n: int) -> int:
        return n + 1

    async with run_worker(worker):
        with anyio.fail_after(15):
            assert (await (await flaky.enqueue(5)).result()).result == 5
            repeating = await tick.enqueue().start(schedule="* * * * * * *")
            await second_tick.wait()
            assert await repeating.unschedule()
            chained = await flaky.enqueue(1).then(inc).then(inc)
            assert (await chained.result()).result == 3
    async with worker:
        dead = worker.enqueue_unsafe("nobody-has-it")
        await dead
    async with run_worker(worker):
        with anyio.fail_after(10):
            await worker.result_by_id(dead.id)
            [letter] = await worker.dead_letters()
            assert letter.task_id == dead.id

            @worker.task(name="nobody-has-it")
            async def now_someone_has() -> str:
                return "replayed"

    async with run_worker(worker):
        with anyio.fail_after(10):
            assert await worker.replay_dead_letters([dead.id]) == [dead.id]
            assert (await worker.result_by_id(dead.id)).result == "replayed"
    assert runs["flaky"] == 6
    assert runs["tick"] >= 2


async def test_decoded_exceptions_never_stop_the_caller(worker: Worker[Any]) -> None:
    """An exception record naming SystemExit, KeyboardInterrupt or GeneratorExit arrives as
    RemoteTaskError: looking at a result never exits the process."""
    from streaq._codec import decode_exception
    from streaq.types import RemoteTaskError

    for name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        exc = decode_exception(encode([name, "builtins", "bye", "", []]))
        assert isinstance(exc, RemoteTaskError)
    assert isinstance(decode_exception(encode(["ValueError", "builtins", "x", "", []])), ValueError)
