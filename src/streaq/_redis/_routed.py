"""Connections of a topology client that turn "wrong server" replies into reconnects.

Theory of operation
-------------------
Under Sentinel or Cluster the server a connection was opened to can stop being the right one while
the connection stays open: after a failover the old master answers writes with ``READONLY`` (and
unblocks a waiting ``XREADGROUP`` with ``UNBLOCKED``); after a resharding a node answers with
``MOVED``/``ASK``, or ``TRYAGAIN``/``CLUSTERDOWN`` while the cluster settles. Pooled commands are
routed (and retried) by the client, but a *dedicated* connection (blocking reads) is used directly
by its holder, which only knows how to recover from a lost connection.

:class:`RoutedConnection` therefore maps those replies, on :meth:`RoutedConnection.execute`, to
what they mean for the holder: this connection is useless now. It closes itself and raises
``redis.exceptions.ConnectionError``; the holder backs off and opens a new dedicated connection,
which the topology's connector points at the right server (it asks the sentinels again, or reads
a fresh slot map). None of these replies means the command ran, so nothing is done twice.

:func:`as_routed` converts a connection made by :func:`~streaq._redis._connection.connect`: the
subclass adds behaviour but no state (``__slots__ = ()``), so the class of the existing object can
be switched in place instead of re-implementing the handshake.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rex

from ._connection import Connection
from ._protocol import Arg

__all__ = ["RoutedConnection", "as_routed", "is_wrong_server"]

_WRONG_SERVER = (
    rex.ReadOnlyError,  # a demoted master (Sentinel failover), or a cluster replica
    rex.AskError,  # MOVED is a subclass: the slot lives (or is moving) elsewhere
    rex.TryAgainError,  # a multi-key command during a slot migration
    rex.ClusterDownError,  # the cluster is reconfiguring
    rex.MasterDownError,  # a replica that lost its master
)


def is_wrong_server(exc: BaseException) -> bool:
    """Whether an error reply means "this server cannot serve the command now, ask another".

    :param exc: an error reply (or any exception).
    :return: true for ``READONLY``, ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``,
        ``MASTERDOWN`` and ``UNBLOCKED`` (a blocked command released by a role change).
    """
    if isinstance(exc, _WRONG_SERVER):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith("UNBLOCKED")


class RoutedConnection(Connection):
    """A :class:`~streaq._redis._connection.Connection` whose :meth:`execute` closes it and
    raises ``ConnectionError`` when the server says it is the wrong one (see the module doc)."""

    __slots__ = ()

    async def execute(self, *args: Arg, block: float = 0.0) -> Any:
        """Run one command, as :meth:`Connection.execute <streaq._redis.Connection.execute>`.

        :param args: command name and arguments.
        :param block: for a blocking command, the seconds it asks the server to wait.
        :return: the reply.
        :raises redis.exceptions.ConnectionError: when the server is no longer the right one (the
            connection is closed then) or the connection fails.
        :raises redis.exceptions.ResponseError: for any other error reply.
        """
        try:
            return await super().execute(*args, block=block)
        except rex.ResponseError as exc:
            if not is_wrong_server(exc):
                raise
            await self.aclose()
            raise rex.ConnectionError(
                f"{self.address} can no longer serve this command ({type(exc).__name__}: {exc})"
            ) from exc


def as_routed(conn: Connection) -> RoutedConnection:
    """Give ``conn`` the behaviour of :class:`RoutedConnection` (in place).

    :param conn: a connection from :func:`~streaq._redis._connection.connect`.
    :return: the same object, now a :class:`RoutedConnection`.
    """
    # Same slots, no new state: switching the class is safe and keeps connect() the only place
    # that builds connections (and runs the handshake).
    conn.__class__ = RoutedConnection
    assert isinstance(conn, RoutedConnection)
    return conn
