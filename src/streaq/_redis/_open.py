"""Opening a client: the topology chosen from the settings, and the client's lifetime.

Theory of operation
-------------------
:func:`open_client` parses the settings once (:func:`~streaq._redis._config.parse_config`) and
picks the topology. One server: a :class:`~streaq._redis._client.RedisClient` whose connector is
``connect`` bound to the config and to a TLS context built once. With ``sentinel_nodes``, the
connector is a :class:`~streaq._redis._sentinel.SentinelConnector`, which asks the sentinels for
the master before every new connection (a ``READONLY`` reply then means a failover is in
progress, and the client's hint says so). With ``cluster_nodes`` the client is a
:class:`~streaq._redis._cluster.ClusterClient`, which routes every command to the master of its
slot, each master with its own pool.

On enter it starts the client's :class:`~streaq._redis._watchdog.Watchdog` in its own task group,
then takes one connection from the pool, which runs the handshake: wrong credentials or an
unreachable server fail the ``async with`` immediately, and the server version is known from
then on. On exit the pool closes its connections and the watchdog stops. The task group is left
without the body's exception (an :class:`~contextlib.AsyncExitStack` closed in ``finally``), so an
error raised inside the ``async with`` reaches the caller as itself, not wrapped in an exception
group.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from ._client import RedisClient
from ._cluster import ClusterClient
from ._config import parse_config
from ._connection import connect
from ._sentinel import SentinelConnector

__all__ = ["open_client"]


@asynccontextmanager
async def open_client(
    url: str = "redis://localhost:6379",
    *,
    max_connections: int | None = None,
    sentinel_nodes: Sequence[tuple[str, int]] | None = None,
    sentinel_master: str = "mymaster",
    sentinel_kwargs: dict[str, Any] | None = None,
    cluster_nodes: Sequence[tuple[str, int]] | None = None,
    cluster_home_key: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[RedisClient]:
    """Connect to Redis for the duration of the ``async with``.

    One server by default; the master of a Sentinel group with ``sentinel_nodes``; a Redis
    Cluster with ``cluster_nodes`` (then the client is a
    :class:`~streaq._redis._cluster.ClusterClient`).

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL (see
        :func:`~streaq._redis._config.parse_config`). With Sentinel or Cluster its host and port
        are not used, its other settings (password, TLS, db ...) apply to every data node.
    :param max_connections: pool size (default 64, or the URL's ``max_connections``); per node
        under Cluster.
    :param sentinel_nodes: ``(host, port)`` of the sentinels, to use Redis Sentinel.
    :param sentinel_master: the name of the master the sentinels monitor.
    :param sentinel_kwargs: :class:`~streaq._redis._config.RedisConfig` fields for the sentinel
        connections, e.g. ``{"password": "..."}``.
    :param cluster_nodes: ``(host, port)`` of some cluster nodes, to use Redis Cluster.
    :param cluster_home_key: under Cluster, a key whose slot's master serves the dedicated
        (blocking read) and pub/sub connections; a worker passes its queue's key prefix.
    :param kwargs: any other :class:`~streaq._redis._config.RedisConfig` field, e.g.
        ``socket_timeout``, ``password``, ``protocol``, ``ssl_ca_certs``.
    :return: the connected client (as the context value).
    :raises TypeError: for an unknown keyword argument.
    :raises ValueError: when both ``sentinel_nodes`` and ``cluster_nodes`` are given.
    :raises redis.exceptions.ConnectionError: when the server cannot be reached (for Sentinel,
        ``redis.sentinel.MasterNotFoundError`` when no sentinel names a master).
    :raises redis.exceptions.AuthenticationError: for wrong credentials.
    """
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    if sentinel_nodes and cluster_nodes:
        raise ValueError("use either sentinel_nodes or cluster_nodes, not both")
    config = parse_config(url, **kwargs)
    client: RedisClient
    if cluster_nodes:
        client = ClusterClient(config, cluster_nodes, home_key=cluster_home_key)
    elif sentinel_nodes:
        client = RedisClient(
            config, SentinelConnector(config, sentinel_nodes, sentinel_master, sentinel_kwargs)
        )
        # the connector checked ROLE: a replica now is a master demoted since (a failover)
        client.replica_hint = "a Sentinel failover is in progress: retry in a moment"
    else:
        ssl_context = config.ssl_context() if config.ssl else None
        client = RedisClient(config, functools.partial(connect, config, ssl_context))
    # The stack, closed in ``finally`` rather than exited with the body's exception, keeps that
    # exception out of the task group (which would wrap it in an exception group).
    stack = AsyncExitStack()
    try:
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        await tasks.start(client.watchdog.run)
        await client._connect_first()
        yield client
    finally:
        try:
            await client.aclose()
        finally:
            await stack.aclose()
