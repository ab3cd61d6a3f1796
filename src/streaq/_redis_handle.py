"""The public handles on Redis: :class:`RedisPool` (settings and a shared client) and
:class:`RedisCommands` (typed commands, ``worker.redis``).

Theory of operation
-------------------
A :class:`RedisPool` is built without I/O (so it can be a module-level object, like a worker) and
holds the connection settings of one server, Sentinel group or Cluster. While at least one user
holds it -- ``async with pool:`` in an application, or a :class:`~streaq.Worker` given it as
``redis_pool`` while the worker is entered or runs -- it holds one open client whose connection
pool every user shares. The first user opens that client, the last one to leave closes it: a
worker never closes a client that an application (or another worker) still uses. Users that
enter while the client is being opened wait for it rather than open a second one. The open
client belongs to the event loop that opened it; a worker's lease thread, which runs its own
loop, opens its own short client on the same settings (:meth:`RedisPool._open`).

:class:`RedisCommands` is a small typed facade over that client's ``execute``: the commands an
application commonly needs next to its queue, and :meth:`RedisCommands.execute` for any other.
Replies are what streaq's client returns: string replies are ``bytes``, never decoded.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio

from ._redis import RedisClient, mask_url, open_client, pairs, parse_config
from .types import StreaqError

__all__ = ["RedisCommands", "RedisPool"]

#: a key or a field name
Key = str | bytes
#: a value sent to Redis (``str`` is UTF-8 encoded, numbers are sent in decimal)
Value = str | bytes | int | float


def _flat(items: Iterable[Value | Iterable[Value]]) -> list[Value]:
    """Arguments given one by one (redis-py style) or as one iterable (coredis, streaq 7.2)."""
    out: list[Value] = []
    for item in items:
        if isinstance(item, str | bytes | int | float):
            out.append(item)
        else:
            out.extend(item)
    return out


def _seconds(value: int | timedelta) -> int:
    return value // timedelta(seconds=1) if isinstance(value, timedelta) else value


def _milliseconds(value: int | timedelta) -> int:
    return value // timedelta(milliseconds=1) if isinstance(value, timedelta) else value


class RedisCommands:
    """Typed Redis commands on streaq's client: ``worker.redis``, or ``async with pool as redis``.

    String replies are ``bytes`` (streaq's client never decodes; call ``.decode()``), integers
    are ``int``. Commands that take many keys or members accept them one by one or as one
    iterable: ``delete("a", "b")`` and ``delete(["a", "b"])`` are the same. Under Redis Cluster
    the keys of one command must share a slot; keys starting with ``worker.prefix`` live in the
    queue's slot.

    :param client: the connected client to send commands on
    """

    __slots__ = ("_client",)

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<RedisCommands {self._client.address}>"

    async def execute(self, *args: Value) -> Any:
        """Run any command, e.g. ``await redis.execute("XLEN", key)``.

        :param args: the command name and its arguments
        :return: the reply: ``bytes``, ``int``, ``float``, ``None``, or lists and dicts of those
        :raises redis.exceptions.ResponseError: for an error reply
        :raises redis.exceptions.ConnectionError: when Redis cannot be reached
        """
        return await self._client.execute(*args)

    async def get(self, key: Key) -> bytes | None:
        """The value of ``key``, or ``None`` when it does not exist."""
        reply: bytes | None = await self._client.execute("GET", key)
        return reply

    async def set(
        self,
        key: Key,
        value: Value,
        *,
        ex: int | timedelta | None = None,
        px: int | timedelta | None = None,
        nx: bool = False,
    ) -> bool:
        """Set ``key`` to ``value``.

        :param ex: expire after this many seconds (or this ``timedelta``)
        :param px: expire after this many milliseconds (or this ``timedelta``)
        :param nx: only set the key when it does not exist yet
        :return: whether the key was set (``False`` only with ``nx`` when it existed)
        """
        args: list[Value] = ["SET", key, value]
        if ex is not None:
            args += ["EX", _seconds(ex)]
        if px is not None:
            args += ["PX", _milliseconds(px)]
        if nx:
            args.append("NX")
        return await self._client.execute(*args) is not None

    async def delete(self, *keys: Key | Iterable[Key]) -> int:
        """Delete keys; the number that existed."""
        return int(await self._client.execute("DEL", *_flat(keys)))

    async def exists(self, *keys: Key | Iterable[Key]) -> int:
        """How many of the keys exist (a key named twice counts twice)."""
        return int(await self._client.execute("EXISTS", *_flat(keys)))

    async def expire(self, key: Key, seconds: int | timedelta) -> bool:
        """Let ``key`` expire after ``seconds``; ``False`` when it does not exist."""
        return bool(await self._client.execute("EXPIRE", key, _seconds(seconds)))

    async def ttl(self, key: Key) -> int:
        """Seconds ``key`` has left; -1 when it does not expire, -2 when it does not exist."""
        return int(await self._client.execute("TTL", key))

    async def incr(self, key: Key) -> int:
        """Add 1 to the integer at ``key`` (0 when missing); the new value."""
        return int(await self._client.execute("INCR", key))

    async def incrby(self, key: Key, increment: int) -> int:
        """Add ``increment`` to the integer at ``key`` (0 when missing); the new value."""
        return int(await self._client.execute("INCRBY", key, increment))

    async def hget(self, key: Key, field: Key) -> bytes | None:
        """The value of ``field`` in the hash ``key``, or ``None``."""
        reply: bytes | None = await self._client.execute("HGET", key, field)
        return reply

    async def hset(self, key: Key, field_values: Mapping[Key, Value]) -> int:
        """Set fields of the hash ``key``; the number of fields that were new."""
        args: list[Value] = ["HSET", key]
        for field, value in field_values.items():
            args += [field, value]
        return int(await self._client.execute(*args))

    async def hgetall(self, key: Key) -> dict[bytes, bytes]:
        """Every field and value of the hash ``key`` (empty when it does not exist)."""
        return dict(pairs(await self._client.execute("HGETALL", key)))

    async def hdel(self, key: Key, *fields: Key | Iterable[Key]) -> int:
        """Delete fields of the hash ``key``; the number that existed."""
        return int(await self._client.execute("HDEL", key, *_flat(fields)))

    async def lpush(self, key: Key, *elements: Value | Iterable[Value]) -> int:
        """Push elements at the head of the list ``key``; its new length."""
        return int(await self._client.execute("LPUSH", key, *_flat(elements)))

    async def rpush(self, key: Key, *elements: Value | Iterable[Value]) -> int:
        """Push elements at the tail of the list ``key``; its new length."""
        return int(await self._client.execute("RPUSH", key, *_flat(elements)))

    async def lrange(self, key: Key, start: int, stop: int) -> list[bytes]:
        """Elements ``start`` to ``stop`` (inclusive; negative counts from the end)."""
        return list(await self._client.execute("LRANGE", key, start, stop))

    async def sadd(self, key: Key, *members: Value | Iterable[Value]) -> int:
        """Add members to the set ``key``; the number that were new."""
        return int(await self._client.execute("SADD", key, *_flat(members)))

    async def srem(self, key: Key, *members: Value | Iterable[Value]) -> int:
        """Remove members from the set ``key``; the number that were members."""
        return int(await self._client.execute("SREM", key, *_flat(members)))

    async def smembers(self, key: Key) -> builtins.set[bytes]:
        """The members of the set ``key`` (empty when it does not exist)."""
        return set(await self._client.execute("SMEMBERS", key))

    async def publish(self, channel: Key, message: Value) -> int:
        """Publish ``message`` on ``channel``; the number of subscribers that received it."""
        return int(await self._client.execute("PUBLISH", channel, message))


class RedisPool:
    """Connection settings, and while in use one client whose connections its users share.

    Give it to several workers (``Worker(redis_pool=pool)``) and use it in the application too
    (``async with pool as redis:`` yields :class:`RedisCommands`). It opens no connection until
    its first user enters, and closes when its last user leaves, so a worker never closes it
    under the application's feet. One event loop at a time uses it.

    :param url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; user, password and db in it
    :param sentinel_nodes: Sentinel addresses (host, port), to use Redis Sentinel
    :param sentinel_master: name of the Sentinel master
    :param sentinel_kwargs: options for the connections to the sentinels
    :param cluster_nodes: startup nodes, to use Redis Cluster
    :param options: connection options: ``max_connections`` (64), ``socket_timeout``,
        ``socket_connect_timeout``, ``client_name``, ``password``, ``ssl_ca_certs``, ...
    :raises StreaqError: when both ``sentinel_nodes`` and ``cluster_nodes`` are given
    :raises TypeError: for an unknown option
    :raises ValueError: for a malformed URL or option value
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        sentinel_nodes: list[tuple[str, int]] | None = None,
        sentinel_master: str = "mymaster",
        sentinel_kwargs: dict[str, Any] | None = None,
        cluster_nodes: list[tuple[str, int]] | None = None,
        **options: Any,
    ) -> None:
        if sentinel_nodes and cluster_nodes:
            raise StreaqError("use either sentinel_nodes or cluster_nodes, not both")
        parse_config(url, **options)  # a typo fails here, not when a worker starts
        self.url = url
        self.sentinel_nodes = list(sentinel_nodes or [])
        self.sentinel_master = sentinel_master
        self.sentinel_kwargs = dict(sentinel_kwargs or {})
        self.cluster_nodes = list(cluster_nodes or [])
        self.options = dict(options)
        self._users = 0
        self._client: RedisClient | None = None
        self._stack: AsyncExitStack | None = None
        self._opening: anyio.Event | None = None

    def __repr__(self) -> str:
        state = f"open, {self._users} users" if self._client is not None else "closed"
        return f"<RedisPool {self.describe()} ({state})>"

    def describe(self) -> str:
        """Where the pool connects, for log lines (a password is shown as ``***``)."""
        if self.cluster_nodes:
            nodes = ",".join(f"{host}:{port}" for host, port in self.cluster_nodes)
            return f"Redis Cluster via {nodes}"
        if self.sentinel_nodes:
            nodes = ",".join(f"{host}:{port}" for host, port in self.sentinel_nodes)
            return f"master {self.sentinel_master!r} of the sentinels {nodes}"
        return mask_url(self.url)

    def _open(self, **overrides: Any) -> AbstractAsyncContextManager[RedisClient]:
        """A new client of its own on these settings (``async with``), not the shared one.

        :param overrides: options replacing the pool's (e.g. ``max_connections=2``), and
            ``cluster_home_key`` (see :func:`~streaq._redis.open_client`)
        """
        return open_client(
            self.url,
            sentinel_nodes=self.sentinel_nodes,
            sentinel_master=self.sentinel_master,
            sentinel_kwargs=self.sentinel_kwargs,
            cluster_nodes=self.cluster_nodes,
            **{**self.options, **overrides},
        )

    async def _acquire(self, home_key: str | None = None) -> RedisClient:
        """Become a user: the shared client, opened now if nobody uses it yet.

        :param home_key: under Cluster, where the client's pub/sub connects if this user opens
            it (a queue's prefix; only locality, see :mod:`streaq._redis._cluster`)
        """
        while self._client is None:
            if self._opening is not None:
                await self._opening.wait()  # another user is opening it: share theirs
                continue
            self._opening = opening = anyio.Event()
            try:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    self._open(cluster_home_key=home_key)
                )
                self._stack = stack
            finally:
                self._opening = None
                opening.set()
        self._users += 1
        return self._client

    async def _release(self) -> None:
        """Stop being a user; the last one closes the shared client."""
        self._users -= 1
        if self._users == 0 and self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    @asynccontextmanager
    async def _use(self, home_key: str | None = None) -> AsyncIterator[RedisClient]:
        """The shared client for the duration of the ``async with`` (see :meth:`_acquire`)."""
        client = await self._acquire(home_key)
        try:
            yield client
        finally:
            await self._release()

    async def __aenter__(self) -> RedisCommands:
        """Hold the pool open (connecting if needed) until the ``async with`` ends.

        :return: commands on the shared client
        :raises redis.exceptions.ConnectionError: when Redis cannot be reached
        """
        return RedisCommands(await self._acquire())

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()
