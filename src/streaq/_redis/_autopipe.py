"""Automatic pipelining: commands issued concurrently by different tasks share one round trip.

Theory of operation
-------------------
Every pooled round trip of a :class:`~streaq._redis._client.RedisClient` (a command or an explicit
pipeline) is a :class:`_Request` queued on the client's :class:`AutoPipeline`. The first caller to
find no *leader* gathering becomes the leader: it takes a pooled connection, yields once to the
event loop so that the other ready tasks can queue their requests, then takes every queued request
(the *batch*), writes them with one ``send`` and reads all their replies with one read loop. Each
request's replies are a contiguous slice of the batch's replies, in order, and are handed to its
caller. As soon as the leader has taken its batch, the next caller becomes the next leader (on
another connection), so batches overlap instead of waiting for each other. An explicit pipeline's
commands are written contiguously, so a ``MULTI``/``EXEC`` inside it is never interleaved. A
blocking command sent through the pool would hold up the replies queued behind it, which is one
more reason blocking reads use :meth:`~streaq._redis._client.RedisClient.dedicated` connections.
At most :data:`MAX_IN_FLIGHT` batches are on the wire at once; a lone caller (none in flight)
sends at once, without the extra scheduling round.

The retry rule of the client applies to the batch as a whole (it is one round trip), and so does
the ``READONLY`` handling: refused replies come back, reworded, to their own callers, who resend
alone on a fresh connection. An error reply (``WRONGTYPE``) is one reply and goes only to its
caller. A failed round trip (``ConnectionError``, ``TimeoutError``) fails every request of the
batch with the same error.

Cancel safety. A request cancelled while queued leaves the queue and is never sent. A request
cancelled after its leader took it is simply abandoned: the leader still reads its replies and
drops them, so the reply stream is never desynchronised. A leader cancelled before taking its batch
hands the leadership to the first queued request. A leader cancelled while its batch is in flight
finishes the round trip first (shielded; the watchdog still bounds it by ``socket_timeout``) and the
cancellation is delivered afterwards, because closing the connection would fail the other callers'
commands, some of which may already have run. A batch of one request is not shielded, so a lone
command keeps the plain rule: interrupted mid-command, its connection is closed, never reused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
from redis import exceptions as rex

from ._connection import Connection

__all__ = ["AutoPipeline"]

#: Batches on the wire at once: while they are answered, the next batch gathers. Two keep the
#: server busy during the client's turn without splitting the callers into tiny batches.
MAX_IN_FLIGHT = 2

#: Takes a slot and a connection (``ConnectionPool.acquire``).
Acquire = Callable[[], Awaitable[tuple[Connection, bool]]]
#: Gives back a connection taken but not used (``ConnectionPool.release``).
Release = Callable[[Connection], Awaitable[None]]
#: Runs one round trip on an acquired connection and releases it (``data, count`` as for
#: :meth:`Connection.roundtrip <streaq._redis._connection.Connection.roundtrip>`).
Send = Callable[[Connection, bool, bytes, "int | None"], Awaitable[Any]]


class _Request:
    __slots__ = ("count", "data", "done", "error", "lead", "result", "taken")

    def __init__(self, data: bytes, count: int | None) -> None:
        self.data = data
        self.count = count
        self.done: anyio.Event | None = None  # only a caller that waits needs one
        self.lead = False  # woken to lead, not with a result
        self.taken = False  # part of a batch: its replies will be read
        self.result: Any = None
        self.error: BaseException | None = None


class AutoPipeline:
    """Coalesces concurrent round trips into shared ones (see the module docstring).

    :param acquire: takes a pooled connection and whether it was reused.
    :param release: gives back a connection taken but not used.
    :param send: runs one round trip on it, applying the client's retry rule, and releases it.
    """

    __slots__ = (
        "_acquire",
        "_gathering",
        "_in_flight",
        "_landed",
        "_pending",
        "_release",
        "_send",
        "batches",
    )

    def __init__(self, acquire: Acquire, release: Release, send: Send) -> None:
        self._acquire = acquire
        self._release = release
        self._send = send
        self._pending: list[_Request] = []
        self._gathering = False
        self._in_flight = 0  # batches written and not yet answered
        self._landed: anyio.Event | None = None  # set when one lands, for a waiting leader
        #: Round trips made, one per batch (for introspection and benchmarks).
        self.batches = 0

    async def roundtrip(self, data: bytes, count: int | None) -> Any:
        """Run packed command(s) in a shared round trip.

        :param data: the packed command(s).
        :param count: number of replies to return as a list, or ``None`` for one reply.
        :return: the reply or the list of replies (error replies returned, not raised).
        :raises redis.exceptions.ConnectionError: when the shared round trip fails.
        :raises redis.exceptions.TimeoutError: when it exceeds ``socket_timeout``.
        """
        request = _Request(data, count)
        self._pending.append(request)
        if self._gathering:
            request.done = done = anyio.Event()
            try:
                await done.wait()
            except BaseException:
                if not request.taken:
                    self._abandon(request)
                raise
            if not request.lead:
                if request.error is not None:
                    raise request.error
                return request.result
        self._gathering = True
        return await self._lead(request)

    def _abandon(self, request: _Request) -> None:
        """Drop a request that was never sent, passing on its leadership if it had it."""
        self._pending.remove(request)
        if request.lead:
            if self._pending:
                successor = self._pending[0]
                successor.lead = True
                if successor.done is not None:
                    successor.done.set()
            else:
                self._gathering = False

    async def _lead(self, request: _Request) -> Any:
        request.lead = True
        conn: Connection | None = None
        try:
            if self._in_flight >= MAX_IN_FLIGHT:
                # Wait for a batch to land; the commands queued meanwhile make the next batch.
                self._landed = landed = anyio.Event()
                await landed.wait()
            elif self._in_flight:
                # Others are busy: let the ready tasks queue their commands behind this one. A
                # lone caller skips this, so sequential commands pay no extra scheduling round.
                await anyio.lowlevel.checkpoint()
            conn, reused = await self._acquire()
            # A slot granted as the leader was cancelled: deliver it before anything is sent.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            if conn is not None:
                await self._release(conn)
            self._abandon(request)
            raise
        batch, self._pending = self._pending, []
        self._gathering = False
        for item in batch:
            item.taken = True
        self.batches += 1
        self._in_flight += 1
        try:
            if len(batch) == 1:
                return await self._send(conn, reused, request.data, request.count)
            return await self._run(conn, reused, batch, request)
        finally:
            self._in_flight -= 1
            if self._landed is not None:
                self._landed.set()
                self._landed = None

    async def _run(
        self, conn: Connection, reused: bool, batch: list[_Request], leader: _Request
    ) -> Any:
        total = sum(1 if item.count is None else item.count for item in batch)
        error: BaseException | None = None
        try:
            with anyio.CancelScope(shield=True):
                replies = await self._send(
                    conn, reused, b"".join(item.data for item in batch), total
                )
        except Exception as exc:
            error = exc
        except BaseException:
            error = rex.ConnectionError("the shared round trip was interrupted")
            raise
        finally:
            index = 0
            for item in batch:
                if error is not None:
                    item.error = error
                elif item.count is None:
                    item.result = replies[index]
                    index += 1
                else:
                    item.result = replies[index : index + item.count]
                    index += item.count
                if item.done is not None:
                    item.done.set()
        if leader.error is not None:
            raise leader.error
        return leader.result
