"""Fixtures of the topology suite: a Sentinel group and a Redis Cluster, started once per module.

Starting a topology takes seconds (sentinels must discover each other, cluster gossip must
settle), so each is module-scoped and shared by the tests of its module on every backend; every
process is killed in teardown, whatever the tests did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import ClusterTopology, SentinelTopology

#: The sentinels' password: every Sentinel test goes through sentinel auth.
SENTINEL_PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """One master, two replicas and three password-protected sentinels (``mymaster``)."""
    topology = SentinelTopology(
        tmp_path_factory.mktemp("sentinel"), sentinel_password=SENTINEL_PASSWORD
    )
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """The module's cluster (see :func:`cluster_topology`)."""
    topology = ClusterTopology(
        tmp_path_factory.mktemp("cluster"), masters=3, replicas=1, node_timeout_ms=1000
    )
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
def cluster_topology(_cluster: ClusterTopology) -> ClusterTopology:
    """A Redis Cluster of three masters with one replica each, failing over in about 2 s.

    A test that kills a master calls :meth:`ClusterTopology.rejoin` afterwards, so the next test
    (the same one on the other backend, say) finds every master with a replica again. Each test
    starts once the cluster is healthy: with a 1 s node timeout, a host busy with other tests can
    leave a node flagged as possibly failing (``fail?``) for a moment.
    """
    _cluster.wait_until_healthy()
    return _cluster
