"""Code written for streaq 7.2 runs unchanged: the behaviours its users and tests rely on.

Each test mirrors what streaq 7.2 does (hashable tasks, ``StreaqError`` for unlistable statuses,
lenient serializers, ``worker.redis`` and ``worker.prefix``, ``redis_pool`` and
``redis_kwargs={"decode_responses": True}``, a confirmed abort of a task with ``ttl=0``, late cron
occurrences skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest
import redis
from redis import exceptions as rex

from streaq import RedisPool, Worker
from streaq._cron import cron_firing_id
from streaq.task import Task, TaskStatus
from streaq.types import StreaqError
from streaq.utils import now_ms

from ._support import RunWorker, Topology, WorkerFactory, delete_queue_keys

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


# worker.redis and worker.prefix


async def test_worker_redis_needs_an_entered_worker(worker: Worker[Any]) -> None:
    with pytest.raises(StreaqError, match="not connected"):
        _ = worker.redis
    async with worker:
        assert await worker.redis.set(worker.prefix + "k", "v")
    with pytest.raises(StreaqError, match="not connected"):
        await worker.redis.get(worker.prefix + "k")


async def test_worker_redis_commands(worker: Worker[Any], clean_queue: str) -> None:
    assert worker.prefix == f"streaq:{{{clean_queue}}}:"
    key, other = worker.prefix + "str", worker.prefix + "other"
    hash_key, list_key, set_key = (worker.prefix + name for name in ("h", "l", "s"))
    async with worker:
        redis = worker.redis
        assert await redis.get(key) is None
        assert await redis.set(key, "v1")
        assert await redis.get(key) == b"v1"  # replies are bytes
        assert not await redis.set(key, "v2", nx=True)
        assert await redis.set(other, 1, ex=timedelta(seconds=100))
        assert 0 < await redis.ttl(other) <= 100
        assert await redis.set(key, "v3", px=50_000)
        assert 0 < await redis.ttl(key) <= 50
        assert await redis.expire(key, 200)
        assert 100 < await redis.ttl(key) <= 200
        assert await redis.exists(key, other, worker.prefix + "missing") == 2
        assert await redis.exists([key, other]) == 2  # 7.2 (coredis) passes an iterable
        assert await redis.incr(other) == 2
        assert await redis.incrby(other, 5) == 7
        assert await redis.hset(hash_key, {"a": 1, "b": "two"}) == 2
        assert await redis.hget(hash_key, "b") == b"two"
        assert await redis.hgetall(hash_key) == {b"a": b"1", b"b": b"two"}
        assert await redis.hdel(hash_key, "a", "missing") == 1
        assert await redis.rpush(list_key, "x", "y") == 2
        assert await redis.lpush(list_key, ["w"]) == 3
        assert await redis.lrange(list_key, 0, -1) == [b"w", b"x", b"y"]
        assert await redis.sadd(set_key, "m1", "m2", "m2") == 2
        assert await redis.srem(set_key, ["m1"]) == 1
        assert await redis.smembers(set_key) == {b"m2"}
        assert await redis.publish(worker.prefix + "nobody-listens", "hi") == 0
        assert await redis.execute("STRLEN", key) == 2
        assert await redis.delete(key, [other, hash_key]) == 3
        assert await redis.exists(key) == 0
        with pytest.raises(rex.ResponseError):
            await redis.execute("NO-SUCH-COMMAND")


# redis_pool and redis_kwargs


def _pool_for(topology: Topology, **options: Any) -> RedisPool:
    settings = dict(topology.worker_options)
    return RedisPool(settings.pop("redis_url", "redis://localhost:6379"), **settings, **options)


@pytest.fixture
def other_queue(topology: Topology, clean_queue: str) -> Iterator[str]:
    """A second queue, next to the test's; its keys are deleted after the test."""
    name = clean_queue + "-other"
    yield name
    delete_queue_keys(topology.node_url(name), name)


async def test_redis_pool_is_shared_and_closed_by_its_last_user(
    topology: Topology, clean_queue: str, other_queue: str, run_worker: RunWorker
) -> None:
    pool = _pool_for(topology)
    first: Worker[Any] = Worker(queue_name=clean_queue, redis_pool=pool, handle_signals=False)
    second: Worker[Any] = Worker(queue_name=other_queue, redis_pool=pool, handle_signals=False)

    @first.task
    async def one() -> int:
        return 1

    @second.task
    async def two() -> int:
        return 2

    with anyio.fail_after(20):
        async with pool as redis:  # the application's own use
            async with run_worker(first), run_worker(second):
                assert (await (await one.enqueue()).result()).result == 1
                assert (await (await two.enqueue()).result()).result == 2
                # one connection pool: idle connections are reused by whoever asks next
                client_ids = {
                    await user.execute("CLIENT", "ID")
                    for user in (redis, first.redis, second.redis, redis)
                }
                assert len(client_ids) == 1
            # the workers stopped; the application's client is still open
            assert await redis.set(first.prefix + "still", "open")
            assert await redis.get(first.prefix + "still") == b"open"
        # the last user left: the pool closed its connections
        with pytest.raises(rex.ConnectionError, match="closed"):
            await redis.get(first.prefix + "still")
        # ... and opens them again for the next user
        async with first:
            assert await first.redis.get(first.prefix + "still") == b"open"


async def test_redis_pool_rejects_anything_else(redis_url: str, clean_queue: str) -> None:
    foreign = redis.ConnectionPool.from_url(redis_url)  # another library's pool, e.g. coredis
    with pytest.raises(StreaqError, match=r"redis_pool must be a streaq\.RedisPool"):
        Worker(queue_name=clean_queue, redis_pool=foreign)  # type: ignore[arg-type]
    pool = RedisPool(redis_url)
    with pytest.raises(StreaqError, match="give redis_url, redis_kwargs"):
        Worker(redis_pool=pool, redis_kwargs={"socket_timeout": 1})
    with pytest.raises(StreaqError, match="give redis_url, redis_kwargs"):
        Worker(redis_pool=pool, cluster_nodes=[("127.0.0.1", 7000)])


async def test_decode_responses_is_accepted_and_unknown_options_are_not(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    worker = worker_factory(redis_kwargs={"decode_responses": True, "socket_timeout": 5})

    @worker.task
    async def text() -> str:
        return "decoded by streaq"

    async with run_worker(worker):
        with anyio.fail_after(10):
            result = await (await text.enqueue()).result()
    assert result.result == "decoded by streaq"
    with pytest.raises(TypeError, match="decode_respones"):
        worker_factory(redis_kwargs={"decode_respones": True})


# abort of a running task whose result is not stored


async def test_abort_of_a_running_task_with_ttl_0_confirms(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    """7.2 returns True at once; the cancelled result (ttl=0: published, never stored) must not
    be missed by a subscription that starts after the abort was sent."""
    started = anyio.Event()

    @worker.task(ttl=0)
    async def forever() -> None:
        started.set()
        await anyio.sleep(60)

    async with run_worker(worker):
        with anyio.fail_after(10):
            task = await forever.enqueue()
            await started.wait()
            before = anyio.current_time()
            assert await task.abort(timeout=5) is True
            assert anyio.current_time() - before < 2


# cron occurrences starting later than max_schedule_drift


async def test_an_occurrence_starting_too_late_is_skipped(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    runs: list[int] = []

    @worker.cron("0 0 1 1 *", max_schedule_drift=timedelta(seconds=2))
    async def yearly() -> None:
        runs.append(1)

    now = now_ms()
    # occurrences queued on time whose start comes only now (no worker ran meanwhile)
    late: Task[[], None] = Task(
        (), {}, yearly, worker, id=cron_firing_id(yearly.fn_name, now - 10_000)
    )
    fresh: Task[[], None] = Task((), {}, yearly, worker, id=cron_firing_id(yearly.fn_name, now))
    async with worker:
        await worker.enqueue_many([late, fresh])
    async with run_worker(worker):
        with anyio.fail_after(10):
            skipped = await late.result()
            assert isinstance(skipped.exception, StreaqError)
            assert "max_schedule_drift" in str(skipped.exception)
            assert (await fresh.result()).success
    assert runs == [1]
