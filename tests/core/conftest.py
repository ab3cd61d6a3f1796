"""Fixtures of the core behaviour suite: the topology, a worker per test, a way to run it, and key
cleanup.

Every test that uses a queue (``clean_queue``, ``worker``, ``worker_factory`` or ``redis_url``)
runs on each topology (``single``, ``sentinel``, ``cluster``) as well as on each backend. The
Sentinel and Cluster runs are marked ``slow``: they exercise the same behaviours through the
topology clients, so they run where the other process-starting tests run (nox: first Python).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streaq import Worker

from ._support import (
    TOPOLOGY_NAMES,
    RunWorker,
    Topologies,
    Topology,
    WorkerFactory,
    delete_queue_keys,
    make_worker,
    running,
)


@pytest.fixture(scope="session")
def topologies(
    shared_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topologies]:
    """The session's topologies: Sentinel and Cluster start on first use (seconds each), then
    serve every test of the session; all their processes are killed at the end."""
    started = Topologies(shared_redis_url, tmp_path_factory.mktemp("core-topologies"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(
    params=[
        pytest.param(name, marks=[] if name == "single" else [pytest.mark.slow])
        for name in TOPOLOGY_NAMES
    ]
)
def topology(request: pytest.FixtureRequest, topologies: Topologies) -> Topology:
    """The topology the test runs on: ``single``, ``sentinel`` or ``cluster``."""
    name: str = request.param
    return topologies.get(name)


@pytest.fixture
def redis_url(topology: Topology, queue_name: str) -> str:
    """The one server holding the test queue's keys (the Sentinel master, the Cluster node owning
    the ``{queue}`` slot), for tests that inspect Redis with a plain client."""
    return topology.node_url(queue_name)


@pytest.fixture
def clean_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    """The test's queue name; the queue's keys are deleted after the test."""
    yield queue_name
    delete_queue_keys(redis_url, queue_name)


@pytest.fixture
def worker(topology: Topology, clean_queue: str) -> Worker[Any]:
    """A fresh worker on the test's queue and topology (register tasks on it, then run it)."""
    return make_worker(topology, clean_queue)


@pytest.fixture
def worker_factory(topology: Topology, clean_queue: str) -> WorkerFactory:
    """Build more workers on the test's queue, e.g. ``worker_factory(concurrency=1)``."""

    def factory(**options: Any) -> Worker[Any]:
        return make_worker(topology, clean_queue, **options)

    return factory


@pytest.fixture
def run_worker() -> RunWorker:
    """``async with run_worker(worker):`` runs the worker for the duration of the block."""
    return running
