"""Pub/sub: a dedicated connection, a reader task, subscriptions that survive reconnects.

Theory of operation
-------------------
:func:`open_pubsub` opens a task group and starts :meth:`PubSub._run` in it with ``tg.start``: the
reader connects first and only then reports ``started``, so a server that cannot be reached fails
the ``async with`` itself. The reader task is the only one that *reads* the connection. Commands
(``SUBSCRIBE`` ...) are *written* by the caller's task under a lock, after registering one
:class:`anyio.Event` per channel in ``_waiters``; the reader sets those events when the server's
confirmations arrive, which is when :meth:`PubSub.subscribe` returns.

Published messages travel from the reader to the consumer through a memory object stream bounded at
``max_buffered`` (default 10,000). A bound rather than an unbounded deque, because a consumer that
stops reading must not grow memory without limit: once the buffer is full the reader stops reading
the socket, Redis buffers for us up to ``client-output-buffer-limit pubsub`` and then disconnects
the client, and we reconnect and emit ``reconnected`` -- so loss is signalled, never silent. The
price: while the buffer is full, ``subscribe`` calls wait until the consumer drains it.

On connection loss the reader reconnects with :class:`~streaq._redis._backoff.Backoff`, sends
``SUBSCRIBE``/``PSUBSCRIBE`` for everything the caller subscribed to, and once the server confirmed
all of them emits ``Message(kind=b"reconnected", ...)``: messages published while disconnected are
lost, and consumers should re-check whatever state they were waiting on. Unsubscribe calls pending
at the time of the loss are released, since the new connection is not subscribed to those channels.

**Dead connections.** The reader waits for messages without a time limit: a quiet channel is
normal. A connection whose server vanished is noticed two ways. TCP keepalive (see
:func:`~streaq._redis._connection.connect`) makes the kernel drop it when the peer's host stops
answering; and a second task, :meth:`PubSub._check_health`, sends ``PING`` when nothing was heard
for ``health_check_interval`` and closes the connection when the reader then waits
``health_check_timeout`` without hearing anything -- which also catches a server process that is
hung while its host still answers. Either way the reader's read fails and it reconnects as above,
emitting ``reconnected``. The check only counts time the reader spends *waiting on the server*:
while it is blocked handing messages to a slow consumer the socket is not read, so silence then
proves nothing.

RESP3 delivers confirmations and messages as push replies, RESP2 as plain arrays; both arrive as
lists with the kind first, so one dispatcher handles both. Leaving the ``async with`` cancels the
reader, which closes the connection under a shield.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from redis import exceptions as rex

from ._backoff import Backoff
from ._connection import Connection, Connector
from ._protocol import pack_command, pack_commands

__all__ = ["Message", "PubSub", "open_pubsub"]


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One pub/sub delivery.

    :param kind: ``b"message"``, ``b"pmessage"`` or ``b"reconnected"``.
    :param channel: the channel it was published to (``b""`` for ``reconnected``).
    :param data: the payload (``b""`` for ``reconnected``).
    :param pattern: the matching pattern for ``pmessage``, else ``None``.
    """

    kind: bytes
    channel: bytes
    data: bytes
    pattern: bytes | None = None


_RECONNECTED = Message(b"reconnected", b"", b"", None)
_PING = pack_command(("PING",))
_CONFIRMATIONS = frozenset((b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe"))


def _to_bytes(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


class PubSub:
    """A subscriber. Obtain one with ``RedisClient.pubsub()`` (or :func:`open_pubsub`).

    :param connector: factory of connections to the server.
    :param max_buffered: messages buffered before the reader stops reading the socket.
    :param backoff: reconnect delays (default ``Backoff()``).
    :param health_check_interval: seconds of silence after which the connection is pinged
        (``0`` = never).
    :param health_check_timeout: seconds the reader may then wait for any reply before the
        connection is declared dead (``None`` = the interval).
    """

    def __init__(
        self,
        connector: Connector,
        *,
        max_buffered: int = 10_000,
        backoff: Backoff | None = None,
        health_check_interval: float = 0.0,
        health_check_timeout: float | None = None,
    ) -> None:
        self._connector = connector
        self._backoff = backoff or Backoff()
        self._health_check_interval = health_check_interval
        self._health_check_timeout = health_check_timeout or health_check_interval
        self._conn: Connection | None = None
        # the reader's clock: when it last received a reply, and since when it has been waiting
        # for the next one (None while it is dispatching); read by _check_health
        self._heard = time.monotonic()
        self._waiting_since: float | None = None
        self._channels: set[bytes] = set()
        self._patterns: set[bytes] = set()
        self._waiters: dict[tuple[bytes, bytes], list[anyio.Event]] = {}
        # error replies (e.g. NOPERM) fail every request waiting for a confirmation
        self._failed: dict[tuple[bytes, bytes], Exception] = {}
        # Confirmations still expected after a reconnect before ``reconnected`` is emitted.
        self._resync: set[tuple[bytes, bytes]] = set()
        self._send_lock = anyio.Lock()
        self._out, self._in = anyio.create_memory_object_stream[Message](max_buffered)

    def __repr__(self) -> str:
        return f"<PubSub channels={len(self._channels)} patterns={len(self._patterns)}>"

    @property
    def connection(self) -> Connection | None:
        """The current connection (``None`` while reconnecting), for introspection and tests."""
        return self._conn

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels subscribed to (as requested; restored after reconnects)."""
        return frozenset(self._channels)

    @property
    def patterns(self) -> frozenset[bytes]:
        """The patterns subscribed to."""
        return frozenset(self._patterns)

    async def subscribe(self, *channels: str | bytes) -> None:
        """Subscribe to channels; returns once the server confirmed every one.

        :param channels: channel names.
        """
        names = [_to_bytes(c) for c in channels]
        self._channels.update(names)
        await self._request(b"subscribe", names)

    async def psubscribe(self, *patterns: str | bytes) -> None:
        """Subscribe to glob patterns; returns once the server confirmed every one.

        :param patterns: patterns such as ``b"news.*"``.
        """
        names = [_to_bytes(p) for p in patterns]
        self._patterns.update(names)
        await self._request(b"psubscribe", names)

    async def unsubscribe(self, *channels: str | bytes) -> None:
        """Unsubscribe from channels (all of them when none are given); waits for confirmation.

        :param channels: channel names.
        """
        names = [_to_bytes(c) for c in channels] or sorted(self._channels)
        self._channels.difference_update(names)
        await self._request(b"unsubscribe", names)

    async def punsubscribe(self, *patterns: str | bytes) -> None:
        """Unsubscribe from patterns (all of them when none are given); waits for confirmation.

        :param patterns: patterns.
        """
        names = [_to_bytes(p) for p in patterns] or sorted(self._patterns)
        self._patterns.difference_update(names)
        await self._request(b"punsubscribe", names)

    async def _request(self, kind: bytes, names: list[bytes]) -> None:
        if not names:
            return
        events = []
        for name in names:
            event = anyio.Event()
            self._waiters.setdefault((kind, name), []).append(event)
            events.append(event)
        try:
            async with self._send_lock:
                conn = self._conn
                if conn is not None:
                    await conn.send_raw(pack_command([kind.decode().upper(), *names]))
        except (rex.ConnectionError, rex.TimeoutError):
            # No connection or a broken one: the reader reconnects and restores the
            # subscriptions, which confirms (or, for unsubscribes, releases) these waiters.
            pass
        for event in events:
            await event.wait()
        errors = [self._failed.pop((kind, name)) for name in names if (kind, name) in self._failed]
        if errors:
            if kind == b"subscribe":
                self._channels.difference_update(names)
            elif kind == b"psubscribe":
                self._patterns.difference_update(names)
            raise errors[0]

    async def get_message(self) -> Message:
        """Wait for the next message (cancelling the wait loses nothing).

        :return: the next :class:`Message`.
        :raises redis.exceptions.ConnectionError: when the subscriber was closed.
        """
        try:
            return await self._in.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise rex.ConnectionError("The pub/sub subscriber is closed") from None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._in.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The reader task: connect, report started, then read, dispatch and reconnect forever."""
        try:
            conn = self._conn = await self._connector()
            task_status.started()
            while True:
                try:
                    while True:
                        self._waiting_since = time.monotonic()
                        reply = await conn.read_push()
                        self._heard = time.monotonic()
                        self._waiting_since = None
                        await self._dispatch(reply)
                # a TimeoutError is the kernel giving up on the peer (keepalive): a lost
                # connection like any other
                except (rex.ConnectionError, rex.TimeoutError):
                    self._conn = None
                    self._waiting_since = None
                    await conn.aclose()
                    conn = self._conn = await self._reconnect()
        finally:
            if self._conn is not None:
                await self._conn.aclose()
            self._out.close()

    async def _check_health(self) -> None:
        """Ping a silent connection; close it when the reader then hears nothing in time."""
        interval, timeout = self._health_check_interval, self._health_check_timeout
        while True:
            await anyio.sleep(interval)
            conn = self._conn
            if conn is None or time.monotonic() - self._heard < interval:
                continue
            sent = time.monotonic()
            # bounded: a send to a dead peer can block once the socket buffer is full, and an
            # interrupted send closes the connection, which is the right outcome then. A failed
            # send closes it too: the reader's read fails, and it reconnects.
            with (
                anyio.move_on_after(timeout),
                contextlib.suppress(rex.ConnectionError, rex.TimeoutError),
            ):
                async with self._send_lock:
                    await conn.send_raw(_PING)
            while self._conn is conn and not conn.is_closed and self._heard < sent:
                waiting_since = self._waiting_since
                if waiting_since is not None:
                    # silence counts from the PING, or from when the reader got back to reading
                    silent = time.monotonic() - max(waiting_since, sent)
                    if silent >= timeout:
                        await conn.aclose()  # the reader's read fails: it reconnects
                        break
                    await anyio.sleep(timeout - silent)
                else:
                    await anyio.sleep(timeout)

    async def _reconnect(self) -> Connection:
        while True:
            await self._backoff.sleep()
            try:
                conn = await self._connector()
            except (rex.ConnectionError, rex.TimeoutError):
                continue
            self._backoff.reset()
            # The new connection is subscribed to nothing: pending unsubscribes are done.
            for key in [
                key for key in self._waiters if key[0] in (b"unsubscribe", b"punsubscribe")
            ]:
                for event in self._waiters.pop(key):
                    event.set()
            try:
                # Under the lock, so a concurrent subscribe() either sees the new connection and
                # sends itself, or added its channel before we read the sets: never neither.
                async with self._send_lock:
                    self._conn = conn
                    self._resync = {(b"subscribe", c) for c in self._channels}
                    self._resync |= {(b"psubscribe", p) for p in self._patterns}
                    commands: list[list[bytes | str]] = []
                    if self._channels:
                        commands.append(["SUBSCRIBE", *self._channels])
                    if self._patterns:
                        commands.append(["PSUBSCRIBE", *self._patterns])
                    if commands:
                        await conn.send_raw(pack_commands(commands))
            except (rex.ConnectionError, rex.TimeoutError):
                self._conn = None
                continue
            if not self._resync:
                await self._out.send(_RECONNECTED)
            return conn

    async def _dispatch(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            # errors carry no channel name: fail every pending request rather than hang them
            for key, events in list(self._waiters.items()):
                self._failed[key] = reply
                for event in events:
                    event.set()
            self._waiters.clear()
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"message":
            await self._out.send(Message(kind, reply[1], reply[2], None))
        elif kind == b"pmessage":
            await self._out.send(Message(kind, reply[2], reply[3], reply[1]))
        elif kind in _CONFIRMATIONS:
            key = (kind, reply[1])
            for event in self._waiters.pop(key, ()):
                event.set()
            if self._resync and key in self._resync:
                self._resync.discard(key)
                if not self._resync:
                    await self._out.send(_RECONNECTED)


@asynccontextmanager
async def open_pubsub(
    connector: Connector,
    *,
    max_buffered: int = 10_000,
    backoff: Backoff | None = None,
    health_check_interval: float = 0.0,
    health_check_timeout: float | None = None,
) -> AsyncIterator[PubSub]:
    """Run a :class:`PubSub` for the duration of the ``async with``.

    :param connector: factory of connections to the server.
    :param max_buffered: messages buffered before the reader stops reading the socket.
    :param backoff: reconnect delays.
    :param health_check_interval: seconds of silence after which the connection is pinged
        (``0`` = never).
    :param health_check_timeout: seconds to wait for the reply before reconnecting.
    :return: the subscriber (as the context value).
    :raises redis.exceptions.ConnectionError: when the first connection fails.
    """
    pubsub = PubSub(
        connector,
        max_buffered=max_buffered,
        backoff=backoff,
        health_check_interval=health_check_interval,
        health_check_timeout=health_check_timeout,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(pubsub._run)
        if health_check_interval:
            tg.start_soon(pubsub._check_health)
        try:
            yield pubsub
        finally:
            tg.cancel_scope.cancel()
            pubsub._in.close()
