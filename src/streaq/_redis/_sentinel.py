"""Redis Sentinel: a connector that finds the current master by asking the sentinels.

Theory of operation
-------------------
:class:`SentinelConnector` is a *connector* (see :mod:`streaq._redis._connection`): the pool, the
dedicated blocking-read connections and the pub/sub reader all get their connections from it, so
all of them follow a failover the same way. Every new connection is made in three steps:

1. **discovery** -- ask the sentinels in turn ``SENTINEL GET-MASTER-ADDR-BY-NAME <name>`` on a
   short-lived connection (configured by ``sentinel_kwargs``: password, timeouts, TLS). The first
   sentinel that names an address wins and is moved to the front of the list, so a dead sentinel
   costs one failed attempt, not one per connection;
2. **connection** to that address with the master's own settings (password, db, client name ...);
3. **verification** -- ``ROLE`` must say ``master``. During a failover the sentinels may still name
   the old master, or name a replica that is not promoted yet; such a connection is closed and the
   attempt fails with ``ConnectionError``, which every caller already treats as "retry later".

Nothing is cached between connections: a connection is opened rarely (the pool keeps them), and
asking each time means a reconnect after a failover can never go back to the old master.

How connections to the old master end: a master that dies drops them (``ConnectionError``); a
master that is demoted by the sentinels has its clients killed, and a connection that still reaches
it gets ``READONLY`` (or ``UNBLOCKED`` for a blocked read). The client discards pooled connections
that saw ``READONLY`` and retries the command once on a new connection (see
:class:`~streaq._redis._client.RedisClient`); dedicated connections are
:class:`~streaq._redis._routed.RoutedConnection` s, which turn those replies into
``ConnectionError`` for their holder.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex
from redis.sentinel import MasterNotFoundError

from ._config import RedisConfig
from ._connection import Connection, connect
from ._routed import as_routed

__all__ = ["SentinelConnector", "sentinel_config"]

# What a sentinel connection never inherits from the master's config: sentinels have no
# databases, and the master's credentials are not the sentinels' (they come from sentinel_kwargs).
_NOT_INHERITED: dict[str, Any] = {"username": None, "password": None, "db": 0, "client_name": None}


def sentinel_config(master: RedisConfig, sentinel_kwargs: dict[str, Any] | None) -> RedisConfig:
    """The settings for connections to the sentinels.

    :param master: the master's settings; TLS and timeouts are inherited.
    :param sentinel_kwargs: :class:`~streaq._redis._config.RedisConfig` fields for the sentinels,
        e.g. ``{"password": "..."}`` when the sentinels require auth.
    :return: the config (its ``host``/``port`` are replaced per sentinel).
    :raises TypeError: for an unknown keyword.
    """
    overrides: dict[str, Any] = dict(_NOT_INHERITED)
    overrides.update(sentinel_kwargs or {})
    fields = {field.name for field in dataclasses.fields(RedisConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unexpected sentinel_kwargs: {', '.join(unknown)}")
    return dataclasses.replace(master, **overrides)


class SentinelConnector:
    """Connector to the current master of a Sentinel-monitored group (see the module doc).

    :param config: settings for the master connections (``host``/``port`` are discovered).
    :param sentinels: ``(host, port)`` of the sentinels.
    :param master_name: the monitored master's name (``sentinel monitor <name> ...``).
    :param sentinel_kwargs: settings for the sentinel connections (see :func:`sentinel_config`).
    """

    def __init__(
        self,
        config: RedisConfig,
        sentinels: Sequence[tuple[str, int]],
        master_name: str,
        sentinel_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not sentinels:
            raise ValueError("at least one sentinel address is needed")
        self.config = config
        self.master_name = master_name
        self._sentinels = [(host, int(port)) for host, port in sentinels]
        self._sentinel_config = sentinel_config(config, sentinel_kwargs)
        self._ssl: ssl.SSLContext | None = config.ssl_context() if config.ssl else None
        self._sentinel_ssl: ssl.SSLContext | None = (
            self._sentinel_config.ssl_context() if self._sentinel_config.ssl else None
        )

    def __repr__(self) -> str:
        return f"<SentinelConnector {self.master_name!r} via {self._sentinels}>"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinel addresses, the one that answered last first."""
        return list(self._sentinels)

    async def discover(self) -> tuple[str, int]:
        """Ask the sentinels for the master's address.

        :return: ``(host, port)`` of the master as the first answering sentinel names it.
        :raises redis.sentinel.MasterNotFoundError: (a ``ConnectionError``) when no sentinel
            answers or none knows the master.
        :raises redis.exceptions.AuthenticationError: when a sentinel refuses the credentials.
        """
        problems: list[str] = []
        for index, (host, port) in enumerate(self._sentinels):
            config = dataclasses.replace(self._sentinel_config, host=host, port=port)
            try:
                conn = await connect(config, self._sentinel_ssl)
                try:
                    reply = await conn.execute(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                finally:
                    await conn.aclose()
            except rex.AuthenticationError:
                raise  # a configuration error, not an outage: retrying cannot help
            except (rex.ConnectionError, rex.TimeoutError) as exc:
                problems.append(str(exc))
                continue
            if not reply:
                problems.append(f"sentinel {host}:{port} does not know {self.master_name!r}")
                continue
            if index:
                self._sentinels.insert(0, self._sentinels.pop(index))
            return bytes(reply[0]).decode(), int(reply[1])
        raise MasterNotFoundError(
            f"No master found for {self.master_name!r}: " + "; ".join(problems)
        )

    async def __call__(self) -> Connection:
        """Open a connection to the current master, verified with ``ROLE``.

        :return: a :class:`~streaq._redis._routed.RoutedConnection` to the master.
        :raises redis.exceptions.ConnectionError: when no master can be found or reached, or the
            named server is not (yet) a master.
        """
        host, port = await self.discover()
        conn = await connect(dataclasses.replace(self.config, host=host, port=port), self._ssl)
        try:
            role = await conn.execute("ROLE")
        except BaseException:
            await conn.aclose()
            raise
        if bytes(role[0]) != b"master":
            await conn.aclose()
            raise rex.ConnectionError(
                f"{host}:{port}, named master of {self.master_name!r} by the sentinels, is a "
                f"{bytes(role[0]).decode()} (failover in progress?)"
            )
        return as_routed(conn)
