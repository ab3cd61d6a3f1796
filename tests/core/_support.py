"""Helpers of the core suite: the topologies it runs on, building and running workers, deleting a
queue's keys.

Theory of operation
-------------------
Every core behaviour runs on three topologies (the ``topology`` fixture): ``single`` (the shared
server on ``REDIS_URL``), ``sentinel`` (a master with two replicas behind three password-protected
sentinels) and ``cluster`` (three masters with a replica each). A :class:`Topology` says how a
worker reaches it (:attr:`Topology.worker_options`, the connection keywords of
:class:`~streaq.Worker`) and which single server holds a given queue (:meth:`Topology.node_url`):
every key of a queue carries the hash tag ``{<queue>}``, so even under Cluster one plain client on
that server sees all of them, which is what the tests that inspect Redis directly use.
:class:`Topologies` starts the Sentinel group and the Cluster on first use only, once per test
session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from children import delete_queue_keys as delete_queue_keys
from servers import ClusterTopology, SentinelTopology

from streaq import Worker
from streaq._redis._slots import key_slot
from streaq.task import Task, TaskStatus

RunWorker = Callable[[Worker[Any]], AbstractAsyncContextManager[Worker[Any]]]
WorkerFactory = Callable[..., Worker[Any]]


#: The sentinels' password: the Sentinel runs go through sentinel auth, as deployments do.
SENTINEL_PASSWORD = "core-sentinel-secret"

#: The topology names, in the order of the ``topology`` fixture's parameters.
TOPOLOGY_NAMES = ("single", "sentinel", "cluster")


class Topology:
    """How the core suite reaches one Redis topology.

    :param name: ``"single"``, ``"sentinel"`` or ``"cluster"``.
    :param worker_options: the connection keywords of :class:`~streaq.Worker` (JSON-serialisable,
        so a worker subprocess can be given them too).
    :param node_url: ``queue_name -> URL`` of the one server holding that queue's keys.
    """

    def __init__(
        self, name: str, worker_options: dict[str, Any], node_url: Callable[[str], str]
    ) -> None:
        self.name = name
        self.worker_options = worker_options
        self._node_url = node_url

    def __repr__(self) -> str:
        return f"<Topology {self.name}>"

    def node_url(self, queue_name: str) -> str:
        """:return: ``redis://host:port`` of the server holding every key of ``queue_name``."""
        return self._node_url(queue_name)


class Topologies:
    """The topologies of a test session, each started on first use and stopped by :meth:`stop`.

    :param single_url: the shared server's URL (``REDIS_URL``).
    :param directory: parent of the throwaway servers' working directories.
    """

    def __init__(self, single_url: str, directory: Path) -> None:
        self._single_url = single_url
        self._directory = directory
        self._started: dict[str, Topology] = {}
        self._failed: dict[str, Exception] = {}
        self._stoppers: list[Callable[[], None]] = []

    def get(self, name: str) -> Topology:
        """:return: the topology ``name``, started now if this is its first use.

        :raises RuntimeError: when it could not be started (now, or at its first use: a topology
            that failed to start is not retried by every test, each waiting for it in vain).
        """
        topology = self._started.get(name)
        if topology is not None:
            return topology
        failure = self._failed.get(name)
        if failure is not None:
            raise RuntimeError(f"the {name} topology failed to start earlier") from failure
        try:
            topology = self._started[name] = self._start(name)
        except Exception as exc:
            self._failed[name] = exc
            raise
        return topology

    def _start(self, name: str) -> Topology:
        if name == "single":
            url = self._single_url
            return Topology(name, {"redis_url": url}, lambda _queue: url)
        if name == "sentinel":
            sentinel = SentinelTopology(
                self._directory / "sentinel", sentinel_password=SENTINEL_PASSWORD
            )
            self._stoppers.append(sentinel.stop)
            sentinel.start()
            options = {
                "sentinel_nodes": sentinel.sentinel_nodes,
                "sentinel_master": sentinel.master_name,
                "sentinel_kwargs": {"password": SENTINEL_PASSWORD},
            }
            # no test fails the master over, so the master found at start stays the master
            master_url = f"redis://127.0.0.1:{sentinel.master_port()}"
            return Topology(name, options, lambda _queue: master_url)
        if name == "cluster":
            # with a replica per master, as deployed: the client must keep to the masters
            cluster = ClusterTopology(self._directory / "cluster", masters=3, replicas=1)
            self._stoppers.append(cluster.stop)
            cluster.start()
            options = {"cluster_nodes": cluster.startup_nodes}

            def owner_url(queue: str) -> str:
                return f"redis://127.0.0.1:{cluster.master_of_slot(key_slot(queue))}"

            return Topology(name, options, owner_url)
        raise ValueError(f"unknown topology {name!r}")

    def stop(self) -> None:
        """Kill every process of every topology started."""
        for stop in self._stoppers:
            with contextlib.suppress(Exception):
                stop()


def make_worker(topology: Topology, queue_name: str, **options: Any) -> Worker[Any]:
    """A worker for tests on ``topology``: no signal handling, short leases."""
    options.setdefault("concurrency", 8)
    options.setdefault("idle_timeout", 5)
    options.setdefault("handle_signals", False)
    return Worker(queue_name=queue_name, **topology.worker_options, **options)


@asynccontextmanager
async def running(worker: Worker[Any]) -> AsyncIterator[Worker[Any]]:
    """Run ``worker`` in a task group for the duration of the block, then cancel it."""
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        try:
            yield worker
        finally:
            tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], Awaitable[bool]], interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds (the caller bounds the wait with ``fail_after``)."""
    while True:
        if await predicate():
            return
        await anyio.sleep(interval)


async def wait_for_status(task: Task[Any, Any], status: TaskStatus) -> None:
    """Wait until ``task`` reports ``status`` (a started task turns RUNNING moments after its
    function is called: the worker records starts in batches, off the task's path)."""

    async def reached() -> bool:
        return await task.status() == status

    await wait_until(reached)
