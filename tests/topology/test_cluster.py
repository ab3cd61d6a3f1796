"""Redis Cluster: routing, queues on several shards, a slot migrated mid-workload."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import anyio
import pytest
from redis import exceptions as rex
from servers import ClusterTopology

from streaq import Worker
from streaq._keys import QueueKeys
from streaq._redis import open_client
from streaq._redis._cluster import ClusterClient
from streaq._redis._slots import SLOTS, key_slot

from ._support import counted_work

pytestmark = pytest.mark.anyio

logger = logging.getLogger(__name__)


def _worker(topology: ClusterTopology, queue_name: str, **options: Any) -> Worker[Any]:
    options.setdefault("concurrency", 1)
    return Worker(
        queue_name=queue_name,
        cluster_nodes=topology.startup_nodes[:1],  # one startup node is enough to find the rest
        handle_signals=False,
        idle_timeout=5,
        **options,
    )


def _cluster_client(worker: Worker[Any]) -> ClusterClient:
    """:return: the cluster client of a running worker (for its routing statistics)."""
    client = worker._client.redis
    assert isinstance(client, ClusterClient)
    return client


async def test_key_slots_agree_with_the_server(cluster_topology: ClusterTopology) -> None:
    async with open_client(cluster_nodes=cluster_topology.startup_nodes) as client:
        for key in ["foo", "streaq:{a queue}:s:normal", "{x}", "é", "x{}y"]:
            assert await client.execute("CLUSTER", "KEYSLOT", key) == key_slot(key)


async def test_routing_and_cross_slot_error(cluster_topology: ClusterTopology) -> None:
    async with open_client(cluster_nodes=cluster_topology.startup_nodes[:1]) as client:
        assert isinstance(client, ClusterClient)
        assert len(client.masters) == 3
        for n in range(30):
            await client.execute("SET", f"route-{n}", n)
        assert [await client.execute("GET", f"route-{n}") for n in range(30)] == [
            str(n).encode() for n in range(30)
        ]
        assert await client.execute("MGET", "{t}a", "{t}b") == [None, None]
        with pytest.raises(rex.ClusterCrossSlotError, match="different cluster slots"):
            await client.execute("MGET", "route-1", "route-2")
        with pytest.raises(rex.ClusterCrossSlotError):
            await client.pipeline([("GET", "route-1"), ("GET", "route-2")])


async def test_slot_map_names_only_masters(cluster_topology: ClusterTopology) -> None:
    masters = cluster_topology.master_ports()
    replicas = cluster_topology.replica_ports()
    assert len(masters) == 3
    assert len(replicas) == 3
    # started from replicas only: they answer CLUSTER SLOTS too, but must not be routed to
    startup = [("127.0.0.1", port) for port in sorted(replicas)]
    async with open_client(cluster_nodes=startup) as client:
        assert isinstance(client, ClusterClient)
        assert {port for _, port in client.masters} == masters
        assert {client.node_for_slot(slot) for slot in range(SLOTS)} == set(client.masters)
        keys = [f"replica-probe-{n}" for n in range(60)]
        assert {client.node_for_slot(key_slot(key)) for key in keys} == set(client.masters)
        for n, key in enumerate(keys):
            assert await client.execute("SET", key, n) == b"OK"
        assert [await client.execute("GET", key) for key in keys] == [
            str(n).encode() for n in range(len(keys))
        ]
        assert client.stats.redirections == 0


def _command_stats(topology: ClusterTopology, port: int) -> dict[str, int]:
    """:return: command (or ``errorstat_`` error) -> calls, since the last ``CONFIG RESETSTAT``."""
    with topology.client(port) as client:
        commands = client.info("commandstats")
        errors = client.info("errorstats")
    stats = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commands.items()}
    stats |= {name: int(value["count"]) for name, value in errors.items()}
    return stats


async def test_worker_reads_and_writes_masters_only(
    cluster_topology: ClusterTopology, queue_name: str
) -> None:
    slot = key_slot(queue_name)
    home = cluster_topology.master_of_slot(slot)
    (home_replica,) = cluster_topology.replicas_of(home)
    for port in [*cluster_topology.master_ports(), *cluster_topology.replica_ports()]:
        with cluster_topology.client(port) as client:
            client.config_resetstat()
    # the worker knows only the replica of its queue's master: it must still use the master
    worker = Worker(
        queue_name=queue_name,
        cluster_nodes=[("127.0.0.1", home_replica)],
        handle_signals=False,
        concurrency=10,
    )

    @worker.task
    async def triple(x: int) -> int:
        return 3 * x

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(20):
            tasks = [await triple.enqueue(n) for n in range(50)]
            assert [(await task.result()).result for task in tasks] == [3 * n for n in range(50)]
        tg.cancel_scope.cancel()
    on_master = _command_stats(cluster_topology, home)
    on_replica = _command_stats(cluster_topology, home_replica)
    # the master ran the queue's functions and served its blocking reads and subscriptions
    for command in ("fcall", "xreadgroup", "subscribe"):
        assert on_master.get(command, 0) > 0, (command, on_master)
    # the replica answered the slot map only; it applied the rest as replicated effects, and no
    # command was sent to it only to be refused (MOVED, READONLY)
    assert on_replica.get("cluster|slots", 0) > 0, on_replica
    for command in ("fcall", "fcall_ro", "xreadgroup", "subscribe", "get", "hget", "publish"):
        assert on_replica.get(command, 0) == 0, (command, on_replica)
    # (redis-py's own handshake leaves ``ERR`` for CLIENT SETINFO, which Redis 7.0 lacks)
    routing = {"MOVED", "ASK", "READONLY", "TRYAGAIN", "CLUSTERDOWN"}
    assert not {f"errorstat_{error}" for error in routing} & set(on_replica), on_replica


def _queues_on_distinct_masters(topology: ClusterTopology, count: int) -> list[str]:
    """Queue names whose slots belong to ``count`` different masters."""
    owners: dict[int, int] = {}
    for port in [port for port in topology.node_ids()]:
        with topology.client(port) as client:
            for start, end, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(_[0][1]) == port:
                    for slot in range(start, end + 1):
                        owners[slot] = port
    names: dict[int, str] = {}
    while len(names) < count:
        name = f"shard-{uuid.uuid4().hex[:8]}"
        names.setdefault(owners[key_slot(name)], name)
    return list(names.values())


async def test_queues_spread_over_shards(cluster_topology: ClusterTopology) -> None:
    names = _queues_on_distinct_masters(cluster_topology, 3)
    workers = [_worker(cluster_topology, name, concurrency=10) for name in names]
    tasks = []
    for worker in workers:

        @worker.task
        async def square(x: int) -> int:
            return x * x

        tasks.append(square)
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run_async)
        with anyio.fail_after(20):
            enqueued = [[await t.enqueue(n) for n in range(50)] for t in tasks]
            for batch in enqueued:
                assert [(await task.result()).result for task in batch] == [
                    n * n for n in range(50)
                ]
        tg.cancel_scope.cancel()
    # each queue's keys are on its own master
    homes = set()
    for name in names:
        stream = QueueKeys(name).stream("normal")
        for port in cluster_topology.node_ids():
            with cluster_topology.client(port) as client:
                if client.execute_command("CLUSTER", "COUNTKEYSINSLOT", key_slot(stream)) and (
                    client.exists(stream)
                ):
                    homes.add(port)
    assert len(homes) == 3


def _migrate_slot(topology: ClusterTopology, slot: int) -> tuple[int, int]:
    """Move ``slot`` to another master the way ``redis-cli --cluster reshard`` does.

    :return: the source and target ports.
    """
    ids = topology.node_ids()
    with topology.client(topology.nodes[0].port) as client:
        source = next(
            int(entry[2][1])
            for entry in client.execute_command("CLUSTER", "SLOTS")
            if entry[0] <= slot <= entry[1]
        )
    target = next(port for port in ids if port != source)
    with topology.client(source) as src, topology.client(target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 2)
            if not keys:
                break
            # small batches, so the half-migrated state lasts a while and ASK is exercised
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in ids:
            with topology.client(port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    return source, target


async def test_nothing_is_lost_when_the_queue_slot_migrates(
    cluster_topology: ClusterTopology, queue_name: str
) -> None:
    worker = _worker(cluster_topology, queue_name, concurrency=10)
    count = 300
    counted = counted_work(worker, sleep=0.01, warm_after=count // 8, result=lambda n: n + 1)
    work, runs, warm = counted.task, counted.runs, counted.warm
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(45):
            tasks = [await work.enqueue(n) for n in range(count // 2)]
            await warm.wait()  # the workload is running
            async with anyio.create_task_group() as side:
                side.start_soon(
                    anyio.to_thread.run_sync, _migrate_slot, cluster_topology, key_slot(queue_name)
                )
                # producers keep enqueueing while the slot moves
                tasks += [await work.enqueue(n) for n in range(count // 2, count)]
            results = [await task.result() for task in tasks]
        stats = _cluster_client(worker).stats
        tg.cancel_scope.cancel()
    assert [r.result for r in results] == [n + 1 for n in range(count)]
    assert runs == dict.fromkeys(range(count), 1)  # every task ran, and only once
    # the slot really moved under the workload: commands were redirected, not just lucky
    print(f"slot migration: {stats}")
    assert stats.redirections > 0, stats


async def test_every_task_gets_one_result_across_a_failover(
    cluster_topology: ClusterTopology, queue_name: str
) -> None:
    slot = key_slot(queue_name)
    old_port = cluster_topology.master_of_slot(slot)
    # every node as a startup node, the doomed master among them, as a deployment would list them
    worker = Worker(
        queue_name=queue_name,
        cluster_nodes=cluster_topology.startup_nodes,
        handle_signals=False,
        idle_timeout=5,
        concurrency=10,
        # the probe jumps the backlog: its latency measures the recovery, not the backlog
        priorities=["normal", "high"],
        prefetch=0,
    )
    count = 300
    counted = counted_work(worker, sleep=0.05, warm_after=count // 4, result=lambda n: n * n)
    work, runs, warm = counted.task, counted.runs, counted.warm
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            with anyio.fail_after(45):
                tasks = [await work.enqueue(n) for n in range(count)]
                # Replication is asynchronous: make sure the replica holds the queue before the
                # crash, so what is tested is the client's recovery, not Redis losing writes.
                await anyio.to_thread.run_sync(cluster_topology.wait_for_replication, old_port)
                await warm.wait()  # the workload is running
                killed_at = time.monotonic()
                cluster_topology.node_on(old_port).stop(kill=True)
                done_before = len(runs)
                promotion: list[tuple[int, float]] = []

                async def watch_failover() -> None:
                    port = await anyio.to_thread.run_sync(
                        cluster_topology.wait_for_failover, slot, old_port
                    )
                    promotion.append((port, time.monotonic()))

                async with anyio.create_task_group() as side:
                    side.start_soon(watch_failover)
                    # enqueued while the slot has no master: the producer pauses until the
                    # promoted replica serves the slot; the worker must then find it as well
                    probe = await work.enqueue(count).start(priority="high")
                    assert (await probe.result()).result == count * count
                    recovered_at = time.monotonic()
                ((new_port, promoted_at),) = promotion
                results = [await task.result() for task in tasks]
                done_at = time.monotonic()
            stats = _cluster_client(worker).stats
            tg.cancel_scope.cancel()
    finally:
        # the next test finds every master with a replica again: the old master as a replica
        await anyio.to_thread.run_sync(cluster_topology.rejoin, old_port)
    assert [r.result for r in results] == [n * n for n in range(count)]
    assert all(r.success for r in results)
    assert set(runs) == set(range(count + 1))
    assert done_before < count  # the failover happened in the middle of the workload
    # at least once: a task whose result was not yet replicated may run again, never lose it
    repeated = sum(1 for n in runs.values() if n > 1)
    message = (
        f"cluster failover: master {old_port} -> {new_port}; replica promoted (all nodes agree) "
        f"after {promoted_at - killed_at:.2f}s, a task enqueued at the kill done after "
        f"{recovered_at - killed_at:.2f}s, all {count} done after {done_at - killed_at:.2f}s; "
        f"{count - done_before} ran after the kill, {repeated} twice; {stats}"
    )
    logger.warning(message)
    print(message)
    assert stats.unreachable > 0, stats
    assert stats.refreshes > 1, stats
