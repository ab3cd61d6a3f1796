"""Peers that vanish without closing anything: bounded round trips, keepalive.

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
        with anyio.fail_after(5), pytest.raises(rex.TimeoutError, match=proxy.url[8:]):
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
