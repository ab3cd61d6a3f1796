"""Peers that vanish without closing anything: bounded round trips, keepalive, health checks.

A :class:`~freezing_proxy.FreezingProxy` in front of the shared server plays the vanished peer:
its frozen connections stay open and answer nothing, while new connections work (a reconnect that
reaches a healthy server).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
from freezing_proxy import FreezingProxy, open_proxy
from redis import exceptions as rex

from streaq._redis import Connection, connect, open_client, parse_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FreezingProxy]:
    """A freezing proxy to the shared server."""
    parts = urlsplit(redis_url)
    async with open_proxy((parts.hostname or "localhost", parts.port or 6379)) as running:
        yield running


def _socket(conn: Connection) -> socket.socket:
    # the connection does not expose its stream; the test reads the options back from it
    return conn._stream.extra(anyio.abc.SocketAttribute.raw_socket)


async def test_silent_server_times_out_a_command(proxy: FreezingProxy) -> None:
    async with open_client(proxy.url, socket_timeout=0.3) as client:
        (conn,) = client.pool.idle_connections
        assert conn.watchdog is client.watchdog
        assert client.watchdog.running
        proxy.freeze()
        start = time.monotonic()
        with anyio.fail_after(5), pytest.raises(rex.TimeoutError, match=f"127.0.0.1:{proxy.port}"):
            await client.execute("PING")
        # cut by the watchdog: at the deadline, within one tick (0.03 s) and some scheduling
        assert 0.3 <= time.monotonic() - start < 1.5
        assert conn.is_closed
        assert client.pool.idle_connections == []
        assert client.pool.in_use == 0
        # the next command gets a new connection, which reaches the server
        assert await client.execute("ECHO", "back") == b"back"


async def test_silent_server_times_out_without_a_watchdog(proxy: FreezingProxy) -> None:
    # connect() alone: no client, so no watchdog; the connection falls back to fail_after
    conn = await connect(parse_config(proxy.url, socket_timeout=0.3))
    try:
        assert conn.watchdog is None
        proxy.freeze()
        with anyio.fail_after(5), pytest.raises(rex.TimeoutError):
            await conn.execute("PING")
        assert conn.is_closed
    finally:
        await conn.aclose()


async def test_blocking_read_is_not_cut_by_socket_timeout(redis_url: str, queue_name: str) -> None:
    stream = f"{queue_name}:stream"
    async with open_client(redis_url, socket_timeout=0.3) as client:
        try:
            await client.execute("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM")
            async with client.dedicated() as conn:
                read = ("XREADGROUP", "GROUP", "g", "c", "BLOCK", 800, "STREAMS", stream, ">")
                with anyio.fail_after(5):
                    start = time.monotonic()
                    assert await conn.execute(*read, block=0.8) is None
                    assert time.monotonic() - start >= 0.75  # the server's BLOCK ran out
                    assert conn.is_idle
                    # without its block time the same read is cut by socket_timeout
                    with pytest.raises(rex.TimeoutError):
                        await conn.execute(*read)
                    assert conn.is_closed
        finally:
            await client.execute("DEL", stream)


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "no-keepalive"])
async def test_keepalive_options_are_set(redis_url: str, keepalive: bool) -> None:
    async with open_client(
        redis_url,
        socket_keepalive=keepalive,
        socket_keepalive_idle=7,
        socket_keepalive_interval=3,
        socket_keepalive_count=4,
    ) as client:
        (conn,) = client.pool.idle_connections
        sock = _socket(conn)
        assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keepalive
        if keepalive and hasattr(socket, "TCP_KEEPIDLE"):
            timings = [
                sock.getsockopt(socket.IPPROTO_TCP, option)
                for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
            ]
            assert timings == [7, 3, 4]
        async with client.dedicated() as dedicated:
            sock = _socket(dedicated)
            assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keepalive


async def test_keepalive_defaults(redis_url: str) -> None:
    async with open_client(redis_url) as client:
        (conn,) = client.pool.idle_connections
        sock = _socket(conn)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


async def _until_idle_longer_than(conn: Connection, seconds: float) -> None:
    """Let ``conn`` sit idle past the health-check interval (a precondition, not a race)."""
    await anyio.sleep(max(0.0, seconds - (time.monotonic() - conn.last_used)) + 0.01)


async def test_killed_idle_connection_is_replaced_by_a_health_check(redis_url: str) -> None:
    async with open_client(redis_url, health_check_interval=0.05) as client:
        client_id = await client.execute("CLIENT", "ID")
        (stale,) = client.pool.idle_connections
        async with client.dedicated() as killer:
            assert await killer.execute("CLIENT", "KILL", "ID", client_id) == 1
            with anyio.fail_after(5):
                # server state, not ours: nothing to wait on but the server itself
                while await killer.execute("CLIENT", "LIST", "ID", client_id):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        await _until_idle_longer_than(stale, 0.05)
        # the pool itself hands out a new connection: no command failed, nothing was retried
        conn, reused = await client.pool.acquire()
        try:
            assert (reused, stale.is_closed) == (False, True)
            assert await conn.execute("CLIENT", "ID") != client_id
        finally:
            await client.pool.release(conn)


async def test_healthy_idle_connection_passes_the_check(redis_url: str) -> None:
    async with open_client(redis_url, health_check_interval=0.05) as client:
        (idle,) = client.pool.idle_connections
        await _until_idle_longer_than(idle, 0.05)
        before = idle.last_used
        conn, reused = await client.pool.acquire()
        await client.pool.release(conn)
        assert (conn, reused) == (idle, True)
        assert conn.last_used > before  # the check's PING was a round trip


async def test_silent_idle_connections_are_replaced_by_a_health_check(
    proxy: FreezingProxy,
) -> None:
    async with open_client(
        proxy.url, health_check_interval=0.05, socket_connect_timeout=0.3, max_connections=3
    ) as client:
        # three idle connections, all frozen (taken at once: concurrent commands would share one)
        taken = [(await client.pool.acquire())[0] for _ in range(3)]
        for conn in taken:
            await client.pool.release(conn)
        stale = client.pool.idle_connections
        assert len(stale) == 3
        proxy.freeze()
        await _until_idle_longer_than(stale[-1], 0.05)
        start = time.monotonic()
        with anyio.fail_after(5):
            assert await client.execute("ECHO", "fine") == b"fine"
        # one check timed out (health_check_timeout = 0.3 s) and took the whole stack with it
        assert 0.3 <= time.monotonic() - start < 1.0
        assert all(conn.is_closed for conn in stale)
        assert len(client.pool.idle_connections) == 1


async def test_silent_pubsub_connection_reconnects(
    proxy: FreezingProxy, redis_url: str, queue_name: str
) -> None:
    async with (
        open_client(redis_url) as publisher,
        open_client(proxy.url, health_check_interval=0.1, socket_connect_timeout=0.3) as client,
        client.pubsub() as pubsub,
    ):
        await pubsub.subscribe(queue_name)
        frozen = pubsub.connection
        proxy.freeze()
        with anyio.fail_after(5):
            # pinged after 0.1 s of silence, declared dead 0.3 s later, reconnected
            message = await pubsub.get_message()
            assert message.kind == b"reconnected"
            assert frozen is not None
            assert frozen.is_closed
            # 2 receivers: the server still has the frozen connection (the proxy holds it open)
            assert await publisher.execute("PUBLISH", queue_name, "after") == 2
            assert (await pubsub.get_message()).data == b"after"


async def test_pubsub_slow_consumer_is_not_declared_dead(redis_url: str, queue_name: str) -> None:
    async with (
        open_client(redis_url, health_check_interval=0.05, socket_timeout=0.1) as client,
        client.pubsub(max_buffered=1) as pubsub,
    ):
        await pubsub.subscribe(queue_name)
        connection = pubsub.connection
        for index in range(5):
            await client.execute("PUBLISH", queue_name, str(index))
        # the reader fills the buffer and then blocks: the socket is not read for a while, which
        # is not silence from the server
        await anyio.sleep(0.5)
        with anyio.fail_after(5):
            received = [(await pubsub.get_message()).data for _ in range(5)]
        assert received == [b"0", b"1", b"2", b"3", b"4"]
        assert pubsub.connection is connection
