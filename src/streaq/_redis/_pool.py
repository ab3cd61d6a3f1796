"""A bounded pool of connections with a cancel-safe wait for a free slot.

Theory of operation
-------------------
The pool counts *slots*: a slot is held by every connection checked out (and by a connection being
created), at most ``max_connections`` at a time. Idle connections hold no slot; they sit on a stack
and the most recently used one is reused first (LIFO keeps a few connections warm and lets the rest
be collected by the server's idle timeout rather than cycling through all of them).

Taking a slot never awaits when one is free: the command's own I/O is the checkpoint, so the hot
path pays for no extra scheduling round. When all slots are held, the caller queues a
:class:`_Waiter` (FIFO, no barging) and waits on its event. A releasing task hands its slot directly
to the first waiter (``granted``) instead of freeing it, so no third task can steal it in between.
If a waiter is cancelled after being granted, it passes the slot on; if before, it just leaves the
queue. Either way nothing leaks.

On release, a connection that is still ``IDLE`` goes back on the stack; a closed one (its command
was interrupted, or it failed) is simply dropped. The pool never hands out a connection it knows to
be broken.

**Health checks.** A connection that sat on the stack longer than ``health_check_interval``
(measured from the start of its last round trip, :attr:`Connection.last_used`) is checked with a
``PING`` bounded by ``health_check_timeout`` before it is handed out
(:meth:`~streaq._redis._connection.Connection.check`; one clock read per acquisition when checks
are on). That catches a peer that vanished silently -- without it the caller's command would wait
its whole ``socket_timeout`` and fail -- and a connection the server closed. When the check fails,
the connection is closed together with *every* idle connection: the stack is LIFO, so the others
have sat idle even longer, and whatever killed the most recent one (a restart, a failover, a lost
route) most likely killed them as well; checking each in turn could cost a ``health_check_timeout``
apiece. A new connection is opened instead, and the caller never sees the failed check. The check
runs while holding the caller's slot, so it counts against ``max_connections`` like any command,
and being cancelled during it frees the slot (and closes the connection, like any interrupted
round trip).

A connection the server dropped while it was idle less than the interval is still discovered on
use, which is why :meth:`ConnectionPool.acquire` reports whether the connection was reused (see
:meth:`streaq._redis._client.RedisClient` for the single retry that allows).

Connections come from a *connector*, a zero-argument async factory: the seam where Sentinel or
Cluster topologies plug in their own address resolution.
"""

from __future__ import annotations

import time
from collections import deque

import anyio
from redis import exceptions as rex

from ._connection import Connection, Connector

__all__ = ["ConnectionPool"]


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class ConnectionPool:
    """Bounded LIFO pool of :class:`~streaq._redis._connection.Connection` objects.

    :param connector: async factory of new, ready connections.
    :param max_connections: the most connections checked out (and so open) at once.
    :param health_check_interval: seconds a connection may sit idle before it is checked when
        taken (``0`` = never check).
    :param health_check_timeout: the limit for a check's ``PING`` (``None`` = no limit).
    """

    __slots__ = (
        "_closed",
        "_connector",
        "_idle",
        "_in_use",
        "_waiters",
        "health_check_interval",
        "health_check_timeout",
        "max_connections",
    )

    def __init__(
        self,
        connector: Connector,
        max_connections: int,
        *,
        health_check_interval: float = 0.0,
        health_check_timeout: float | None = None,
    ) -> None:
        self._connector = connector
        self.max_connections = max_connections
        self.health_check_interval = health_check_interval
        self.health_check_timeout = health_check_timeout
        self._idle: list[Connection] = []
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool idle={len(self._idle)} in_use={self._in_use} "
            f"max={self.max_connections} waiting={len(self._waiters)}>"
        )

    @property
    def idle_connections(self) -> list[Connection]:
        """A snapshot of the idle connections (most recently used last)."""
        return list(self._idle)

    @property
    def in_use(self) -> int:
        """The number of slots held."""
        return self._in_use

    async def acquire(self, *, fresh: bool = False) -> tuple[Connection, bool]:
        """Take a slot and a connection; pair with :meth:`release`.

        :param fresh: open a new connection even if idle ones exist.
        :return: the connection and whether it was reused from the idle stack.
        :raises redis.exceptions.ConnectionError: when the pool is closed or connecting fails.
        :raises redis.exceptions.TimeoutError: when connecting takes too long.
        """
        if self._closed:
            raise rex.ConnectionError("The connection pool is closed")
        if self._in_use < self.max_connections and not self._waiters:
            self._in_use += 1
        else:
            await self._wait_for_slot()
        try:
            if not fresh:
                idle = self._idle
                interval = self.health_check_interval
                while idle:
                    conn = idle.pop()
                    if not conn.is_idle:
                        continue
                    if not interval or time.monotonic() - conn.last_used <= interval:
                        return conn, True
                    if await conn.check(self.health_check_timeout):
                        return conn, True
                    await self._close_idle()
            conn = await self._connector()
        except BaseException:
            self._free_slot()
            raise
        return conn, False

    async def _close_idle(self) -> None:
        """Close every idle connection (after a failed health check, see the module doc)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    async def _wait_for_slot(self) -> None:
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # The slot was handed to us as we were being cancelled: pass it on.
                self._free_slot()
            else:
                self._waiters.remove(waiter)
            raise
        if self._closed:
            self._free_slot()
            raise rex.ConnectionError("The connection pool is closed")

    async def release(self, conn: Connection) -> None:
        """Give back the slot and, if it is still usable, the connection.

        :param conn: a connection returned by :meth:`acquire`.
        """
        self._free_slot()
        if conn.is_idle:
            if not self._closed:
                self._idle.append(conn)
                return
            await conn.aclose()

    def _free_slot(self) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.event.set()
        else:
            self._in_use -= 1

    async def aclose(self) -> None:
        """Close the idle connections and refuse new acquisitions; checked-out connections are
        dropped when released (their holders are expected to have finished by then)."""
        self._closed = True
        await self._close_idle()
        # Wake the waiters so they fail instead of hanging.
        while self._waiters:
            self._free_slot()
