"""The client the rest of streaq uses: pooled commands, pipelines, functions, dedicated connections.

Theory of operation
-------------------
A :class:`RedisClient` is made and run by :func:`~streaq._redis._open.open_client`; it holds the
settings, a :class:`~streaq._redis._pool.ConnectionPool` fed by a *connector* (the topology seam:
a factory of new connections), and a :class:`~streaq._redis._watchdog.Watchdog` that bounds every
round trip by ``socket_timeout`` without a cancel scope per command.

Every pooled command is one *round trip* on one connection (:meth:`RedisClient._roundtrip`);
commands issued concurrently by different tasks share round trips, automatically pipelined on one
connection by an :class:`~streaq._redis._autopipe.AutoPipeline` (cancel-safe; see there). The
single retry rule (applied to a shared round trip as a whole): when a command fails with
``ConnectionError`` on a connection that was reused from the idle stack and **no reply byte had
arrived**, the server most likely closed that connection while it sat idle (restart, ``timeout``
config, ``CLIENT KILL``); the command is sent again once, on a freshly opened connection. A
failure on a fresh connection, after reply bytes arrived, or a timeout is never retried.

Blocking commands (``XREADGROUP BLOCK``, ``BLPOP``) go to :meth:`RedisClient.dedicated`
connections, outside the pool, so they never starve pooled commands of slots; cancelling one closes
its connection. Their holder passes the time the command blocks (``conn.execute(..., block=2.0)``),
which is added to ``socket_timeout`` for that round trip, so a long ``BLOCK`` is never cut while a
dead server is still noticed. Pub/sub gets its own connection as well (:meth:`RedisClient.pubsub`),
checked with ``PING`` when silent for ``health_check_interval``.

A connection whose reply was ``READONLY`` (its server was demoted to a replica, e.g. by a Sentinel
failover) is closed instead of returned to the pool, and the command -- which did not run -- is
sent once more on a new connection, i.e. to the master the connector finds now. A ``READONLY``
error is reworded to name the replica and what to do (:attr:`RedisClient.replica_hint`); with a
plain URL pointing at a replica, the second attempt gets it too and raises it (no endless retry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis import exceptions as rex

from ._autopipe import AutoPipeline
from ._backoff import Backoff
from ._config import RedisConfig
from ._connection import Connection, Connector
from ._errors import RedisVersionError
from ._functions import FcallSpec, FunctionCaller, FunctionLibrary
from ._pool import ConnectionPool
from ._protocol import Arg, pack_command, pack_commands
from ._pubsub import PubSub, open_pubsub
from ._watchdog import Watchdog

__all__ = ["RedisClient"]


class RedisClient:
    """A pooled client for one Redis server. Create with
    :func:`~streaq._redis._open.open_client`.

    :param config: the settings.
    :param connector: factory of new connections (the topology seam).
    :param watchdog: the watchdog to enforce ``socket_timeout`` with (a new one when ``None``;
        a cluster's node clients share the cluster client's). It watches every connection the
        connector makes; :func:`~streaq._redis._open.open_client` runs it.
    """

    def __init__(
        self, config: RedisConfig, connector: Connector, *, watchdog: Watchdog | None = None
    ) -> None:
        self.config = config
        #: Enforces ``socket_timeout`` on this client's connections while it runs.
        self.watchdog = watchdog or Watchdog(config.socket_timeout)
        self._connector = connector = self.watchdog.watching(connector)
        self._pool = ConnectionPool(
            connector,
            config.max_connections,
            health_check_interval=config.health_check_interval,
            health_check_timeout=config.health_check_timeout,
        )
        self._functions = FunctionCaller(self)
        pool = self._pool
        self._autopipe = AutoPipeline(pool.acquire, pool.release, self._roundtrip_on)
        #: The server's version, read during the first handshake.
        self.server_version: tuple[int, int, int] = (0, 0, 0)
        #: What to do about a server that stays a replica, for the ``READONLY`` message.
        self.replica_hint = "point streaq at the master (or use sentinel_nodes)"

    def __repr__(self) -> str:
        return f"<RedisClient {self.address} {self._pool!r}>"

    @property
    def address(self) -> str:
        """``host:port`` (or the socket path) of the server."""
        return self.config.address

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (for introspection and tests)."""
        return self._pool

    async def _connect_first(self) -> None:
        conn, _ = await self._pool.acquire()
        self.server_version = conn.server_version
        await self._pool.release(conn)

    async def aclose(self) -> None:
        """Close the pool's connections."""
        await self._pool.aclose()

    def require_version(self, minimum: tuple[int, int, int], feature: str) -> None:
        """Fail clearly when the server is too old.

        :param minimum: the lowest acceptable ``(major, minor, patch)``.
        :param feature: what needs it, for the message (e.g. ``"FUNCTION and XAUTOCLAIM"``).
        :raises RedisVersionError: when :attr:`server_version` is below ``minimum``.
        """
        if self.server_version < minimum:
            need = ".".join(map(str, minimum))
            have = ".".join(map(str, self.server_version))
            raise RedisVersionError(
                f"streaq needs Redis >= {need} ({feature}); "
                f"the server at {self.address} runs {have}"
            )

    @property
    def autopipe(self) -> AutoPipeline:
        """The automatic pipelining of concurrent commands (for introspection and tests)."""
        return self._autopipe

    async def _roundtrip(self, data: bytes, count: int | None, *, fresh: bool = False) -> Any:
        if not fresh:
            return await self._autopipe.roundtrip(data, count)
        conn, reused = await self._pool.acquire(fresh=True)
        return await self._roundtrip_on(conn, reused, data, count)

    async def _roundtrip_on(
        self, conn: Connection, reused: bool, data: bytes, count: int | None
    ) -> Any:
        """One round trip on ``conn`` (then released), with the single retry rule."""
        pool = self._pool
        try:
            return await self._discard_if_readonly(conn, await conn.roundtrip(data, count), count)
        except rex.ConnectionError:
            if not reused or conn.reply_started:
                raise
        finally:
            await pool.release(conn)
        # The idle connection was dead before we used it: one retry on a new connection.
        conn, _ = await pool.acquire(fresh=True)
        try:
            return await self._discard_if_readonly(conn, await conn.roundtrip(data, count), count)
        finally:
            await pool.release(conn)

    async def _discard_if_readonly(self, conn: Connection, reply: Any, count: int | None) -> Any:
        """Close ``conn`` when ``reply`` (or one of ``count`` pipeline replies) is ``READONLY``.

        ``READONLY`` means the server is a replica now (a demoted master after a Sentinel
        failover): the connection must not go back to the pool, or every later command would hit
        it again. The error is reworded to name the replica and what to do: the server's own
        message ("You can't write against a read only replica.") says neither.
        """
        if count is None:
            if isinstance(reply, rex.ReadOnlyError):
                await conn.aclose()
                return self._replica_error(conn, reply)
            return reply
        if any(isinstance(item, rex.ReadOnlyError) for item in reply):
            await conn.aclose()
            return [
                self._replica_error(conn, item) if isinstance(item, rex.ReadOnlyError) else item
                for item in reply
            ]
        return reply

    def _replica_error(self, conn: Connection, error: rex.ReadOnlyError) -> rex.ReadOnlyError:
        return rex.ReadOnlyError(
            f"the server at {conn.address} is a read-only replica ({error}); {self.replica_hint}"
        )

    async def execute(self, *args: Arg) -> Any:
        """Run one command on a pooled connection.

        :param args: command name and arguments (``str``, ``bytes``, ``int`` or ``float``).
        :return: the reply (shapes: see :mod:`streaq._redis._protocol`).
        :raises redis.exceptions.ResponseError: (or a subclass) for an error reply.
        :raises redis.exceptions.ConnectionError: when the server cannot be reached.
        :raises redis.exceptions.TimeoutError: when ``socket_timeout`` expires.
        """
        data = pack_command(args)
        reply = await self._roundtrip(data, None)
        if isinstance(reply, Exception):
            if isinstance(reply, rex.ReadOnlyError):
                # The command did not run; the connection was dropped, so a fresh one reaches the
                # current master (Sentinel) -- or the same replica again, and then we give up.
                reply = await self._roundtrip(data, None, fresh=True)
                if isinstance(reply, Exception):
                    raise reply
                return reply
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run many commands in one round trip (not a transaction: wrap in MULTI/EXEC for that).

        :param commands: the commands.
        :param raise_on_error: raise the first error reply after reading all replies; when false,
            error replies are exception instances in the returned list.
        :return: one reply per command.
        :raises redis.exceptions.RedisError: as for :meth:`execute`.
        """
        if not commands:
            return []
        replies: list[Any] = await self._roundtrip(pack_commands(commands), len(commands))
        readonly = [i for i, reply in enumerate(replies) if isinstance(reply, rex.ReadOnlyError)]
        if readonly:
            # Only the refused commands are sent again: the others ran (reads on a replica).
            retried = await self._roundtrip(
                pack_commands([commands[i] for i in readonly]), len(readonly), fresh=True
            )
            for index, reply in zip(readonly, retried, strict=True):
                replies[index] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def fcall(
        self,
        library: FunctionLibrary,
        function: str,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
    ) -> Any:
        """``FCALL`` a function of ``library``, loading the library on demand.

        :param library: the library defining ``function``.
        :param function: the function name.
        :param keys: key arguments.
        :param args: other arguments.
        :return: the function's reply.
        :raises redis.exceptions.ResponseError: for an error raised by the function.
        """
        return await self._functions.fcall(library, function, keys, args)

    async def fcall_ro(
        self,
        library: FunctionLibrary,
        function: str,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
    ) -> Any:
        """``FCALL_RO`` a read-only (``no-writes``) function of ``library``.

        :param library: the library defining ``function``.
        :param function: the function name.
        :param keys: key arguments.
        :param args: other arguments.
        :return: the function's reply.
        :raises redis.exceptions.ResponseError: for an error raised by the function.
        """
        return await self._functions.fcall(library, function, keys, args, read_only=True)

    async def fcall_pipeline(
        self, library: FunctionLibrary, calls: Sequence[FcallSpec], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Many ``FCALL`` s of ``library`` in one round trip.

        :param library: the library defining the functions.
        :param calls: ``(function, keys, args)`` triples.
        :param raise_on_error: raise the first error after all calls ran.
        :return: one reply per call.
        :raises redis.exceptions.ResponseError: the first error, with ``raise_on_error``.
        """
        return await self._functions.fcall_pipeline(library, calls, raise_on_error=raise_on_error)

    @asynccontextmanager
    async def dedicated(self, *, home_key: str | None = None) -> AsyncIterator[Connection]:
        """A new connection outside the pool, for blocking commands; closed on exit.

        Its round trips are bounded by ``socket_timeout`` like pooled ones: pass a blocking
        command's wait as ``conn.execute(..., block=seconds)`` to extend the limit for it (or set
        ``conn.socket_timeout``). Cancelling a command on it at any moment closes it, so a late
        reply is never misread.

        :param home_key: a key the commands will touch; only Cluster needs it (see
            :meth:`~streaq._redis._cluster.ClusterClient.dedicated`).
        :return: the connection (as the context value).
        :raises redis.exceptions.ConnectionError: when connecting fails.
        """
        conn = await self._connector()
        try:
            yield conn
        finally:
            await conn.aclose()

    def pubsub(
        self, *, max_buffered: int = 10_000, backoff: Backoff | None = None
    ) -> AbstractAsyncContextManager[PubSub]:
        """A subscriber on its own connection, for ``async with``.

        :param max_buffered: messages buffered before backpressure (see :mod:`._pubsub`).
        :param backoff: reconnect delays (default ``Backoff()``).
        :return: an async context manager yielding a :class:`~streaq._redis._pubsub.PubSub`.
        """
        return open_pubsub(
            self._connector,
            max_buffered=max_buffered,
            backoff=backoff,
            health_check_interval=self.config.health_check_interval,
            health_check_timeout=self.config.health_check_timeout,
        )
