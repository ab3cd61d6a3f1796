"""Redis Sentinel: master discovery, sentinel auth, and a worker surviving a failover."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from redis import exceptions as rex
from servers import SentinelTopology

from streaq import Worker
from streaq._redis import open_client

from ._support import counted_work
from .conftest import SENTINEL_PASSWORD

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

logger = logging.getLogger(__name__)


def _worker(topology: SentinelTopology, queue_name: str, **options: Any) -> Worker[Any]:
    options.setdefault("concurrency", 1)
    return Worker(
        queue_name=queue_name,
        sentinel_nodes=topology.sentinel_nodes,
        sentinel_master=topology.master_name,
        sentinel_kwargs={"password": SENTINEL_PASSWORD, "socket_connect_timeout": 1},
        redis_kwargs={"socket_connect_timeout": 1},
        handle_signals=False,
        idle_timeout=5,
        **options,
    )


async def test_client_finds_the_master(sentinel_topology: SentinelTopology) -> None:
    async with open_client(
        sentinel_nodes=[("127.0.0.1", 1), *sentinel_topology.sentinel_nodes],  # one is dead
        sentinel_kwargs={"password": SENTINEL_PASSWORD},
    ) as client:
        role = await client.execute("ROLE")
        assert role[0] == b"master"
        assert await client.execute("SET", "sentinel-probe", 1) == b"OK"


async def test_wrong_sentinel_password_is_an_authentication_error(
    sentinel_topology: SentinelTopology,
) -> None:
    with pytest.raises(rex.AuthenticationError):
        async with open_client(
            sentinel_nodes=sentinel_topology.sentinel_nodes,
            sentinel_kwargs={"password": "wrong"},
        ):
            pass


async def test_unknown_master_name_is_a_clear_error(sentinel_topology: SentinelTopology) -> None:
    with pytest.raises(rex.ConnectionError, match="No master found for 'nope'"):
        async with open_client(
            sentinel_nodes=sentinel_topology.sentinel_nodes,
            sentinel_master="nope",
            sentinel_kwargs={"password": SENTINEL_PASSWORD},
        ):
            pass


async def test_every_task_gets_one_result_across_a_failover(
    sentinel_topology: SentinelTopology, queue_name: str
) -> None:
    worker = _worker(sentinel_topology, queue_name, concurrency=20)
    count = 400
    counted = counted_work(worker, sleep=0.02, warm_after=count // 4, result=lambda n: n * n)
    work, runs, warm = counted.task, counted.runs, counted.warm
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(45):
            tasks = [await work.enqueue(n) for n in range(count)]
            # Replication is asynchronous: make sure the replicas hold the queue before the
            # crash, so what is tested is the worker's recovery, not Redis losing acked writes.
            await worker._client.redis.execute("WAIT", 2, 2000)
            await warm.wait()  # the workload is running
            old_port = sentinel_topology.master_port()
            killed_at = time.monotonic()
            sentinel_topology.server_on(old_port).stop(kill=True)
            new_port = await anyio.to_thread.run_sync(
                sentinel_topology.wait_for_new_master, old_port
            )
            promoted_at = time.monotonic()
            # the first task enqueued after the failover proves the worker follows the new master
            while True:
                try:
                    probe = await work.enqueue(count)
                    break
                except (rex.ConnectionError, rex.TimeoutError):
                    await anyio.sleep(0.05)
            assert (await probe.result()).result == count * count
            recovered_at = time.monotonic()
            results = [await task.result() for task in tasks]
        tg.cancel_scope.cancel()
    assert [r.result for r in results] == [n * n for n in range(count)]
    assert all(r.success for r in results)
    assert set(runs) == set(range(count + 1))
    # at least once: a task whose result was not yet replicated may run again, never lose it
    repeated = sum(1 for n in runs.values() if n > 1)
    message = (
        f"failover: master {old_port} -> {new_port}; promoted after "
        f"{promoted_at - killed_at:.2f}s, first new task done after "
        f"{recovered_at - killed_at:.2f}s; {repeated} task(s) ran twice"
    )
    logger.warning(message)
    print(message)
    # bring the old master back; the sentinels turn it into a replica of the new one
    sentinel_topology.server_on(old_port).start()
