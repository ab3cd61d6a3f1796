"""Round-trip deadlines without a cancel scope per command.

Theory of operation
-------------------
Every round trip of a :class:`~streaq._redis._connection.Connection` is bounded by its
``socket_timeout`` (plus the time a blocking command may hold its reply on purpose). The obvious
enforcement, ``anyio.fail_after`` around each round trip, costs about 10 µs to enter and leave a
cancel scope with a deadline: sequential ``PING`` s to a local server took 25-40 % longer with it
(asyncio, uvloop and trio alike), against 0-2 % with the watchdog. So the connections of a client
enforce it together with one :class:`Watchdog` task instead:

* a connection the watchdog *watches* starts a round trip by writing its deadline into a slot (one
  clock read, no scheduling);
* the watchdog wakes every :attr:`Watchdog.tick` seconds and *expires* each watched connection still
  inside a round trip past its deadline: it marks it and closes its stream (see
  :meth:`~streaq._redis._connection.Connection.expire`). Closing the stream wakes the task waiting
  on it with an I/O error, which the connection, being marked, reports as
  ``redis.exceptions.TimeoutError``. The connection is closed, as after any interrupted round trip,
  so it never goes back to the pool.

A round trip is thus cut between its deadline and one tick later; the tick is a tenth of the
client's ``socket_timeout``, at most one second (so a client with the default 30 s limit wakes
once a second). A connection that no *running* watchdog watches -- one made with
:func:`~streaq._redis._connection.connect` directly, or one used after its client closed -- falls
back to ``fail_after``: the same behaviour at the higher cost.

:func:`~streaq._redis._open.open_client` owns the task: it starts :meth:`Watchdog.run` in its
task group and wraps the client's connector with :meth:`Watchdog.watching`, so pooled, dedicated
and pub/sub connections are all watched (pub/sub connections never start a round trip, so they are
never expired: their reader waits for messages without a limit by design).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from ._connection import Connection, Connector

__all__ = ["Watchdog"]

#: The longest and shortest time between two checks, in seconds.
_MAX_TICK = 1.0
_MIN_TICK = 0.005


class Watchdog:
    """Expires the round trips of the connections it watches that overrun their deadline.

    :param socket_timeout: the client's per-round-trip limit, which sets the checking period
        (``None``: the longest period; connections may still set their own limits).
    """

    __slots__ = ("_connections", "running", "tick")

    def __init__(self, socket_timeout: float | None) -> None:
        limit = math.inf if socket_timeout is None else socket_timeout
        #: Seconds between two checks.
        self.tick = max(_MIN_TICK, min(_MAX_TICK, limit / 10))
        #: Whether :meth:`run` is running (connections rely on it only then).
        self.running = False
        self._connections: set[Connection] = set()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Watchdog {state} tick={self.tick:g}s watching={len(self._connections)}>"

    def watch(self, conn: Connection) -> Connection:
        """Watch ``conn`` until it is closed.

        :param conn: an open connection.
        :return: the same connection.
        """
        conn.watchdog = self
        self._connections.add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        """Stop watching ``conn`` (it calls this when it closes).

        :param conn: a watched connection.
        """
        self._connections.discard(conn)

    def watching(self, connector: Connector) -> Connector:
        """Wrap a connector so that every connection it makes is watched.

        :param connector: a zero-argument factory of connections.
        :return: a connector with the same behaviour whose connections are watched.
        """

        async def connect() -> Connection:
            return self.watch(await connector())

        return connect

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Check the watched connections every :attr:`tick` seconds until cancelled."""
        self.running = True
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.tick)
                now = time.monotonic()
                for conn in [conn for conn in self._connections if conn.overdue(now)]:
                    await conn.expire()
        finally:
            self.running = False
