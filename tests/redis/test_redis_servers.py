"""Tests against throwaway servers: restarts, reconnects, authentication, TLS, unreachable ports,
servers that stop answering."""

from __future__ import annotations

import socket
import time

import anyio
import anyio.abc
import pytest
from redis import exceptions as rex
from servers import ServerFactory, free_port

from streaq._redis import Backoff, FunctionLibrary, open_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LIBRARY = FunctionLibrary(
    "streaq_servers_test",
    "#!lua name=streaq_servers_test\n"
    "redis.register_function('hello', function(keys, args) return 'hi ' .. args[1] end)",
)


async def test_server_restart_mid_session(redis_server: ServerFactory) -> None:
    server = redis_server(appendonly=True)
    async with open_client(server.url, max_connections=4) as client:
        assert await client.execute("SET", "k", "v") == b"OK"
        # three idle connections, all of which die with the server
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(client.execute, "PING")
        server.restart()
        assert await client.execute("GET", "k") == b"v"
        assert await client.pipeline([("PING",), ("GET", "k")]) == [b"PONG", b"v"]


async def test_server_down_is_a_connection_error(redis_server: ServerFactory) -> None:
    server = redis_server()
    async with open_client(server.url) as client:
        server.stop(kill=True)
        with pytest.raises(rex.ConnectionError, match=f"127.0.0.1:{server.port}"):
            await client.execute("PING")
        server.start()
        assert await client.execute("PING") == b"PONG"


async def test_function_flush_reloads_transparently(redis_server: ServerFactory) -> None:
    server = redis_server()
    async with open_client(server.url) as client:
        assert await client.fcall(LIBRARY, "hello", [], ["a"]) == b"hi a"
        await client.execute("FUNCTION", "FLUSH")
        assert await client.fcall(LIBRARY, "hello", [], ["b"]) == b"hi b"
        server.restart()  # no persistence: the library is gone again
        assert await client.fcall(LIBRARY, "hello", [], ["c"]) == b"hi c"


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
async def test_pubsub_reconnects_and_resubscribes(
    redis_server: ServerFactory, protocol: int
) -> None:
    server = redis_server()
    backoff = Backoff(initial=0.01, maximum=0.1)
    async with (
        open_client(server.url, protocol=protocol) as client,
        client.pubsub(backoff=backoff) as pubsub,
    ):
        await pubsub.subscribe("chan")
        await pubsub.psubscribe("pat.*")
        with anyio.fail_after(10):
            assert await client.execute("PUBLISH", "chan", "before") == 1
            assert (await pubsub.get_message()).data == b"before"
            server.restart()
            message = await pubsub.get_message()
            assert (message.kind, message.channel, message.data) == (b"reconnected", b"", b"")
            assert await client.execute("PUBLISH", "chan", "after") == 1
            assert (await pubsub.get_message()).data == b"after"
            assert await client.execute("PUBLISH", "pat.x", "p") == 1
            message = await pubsub.get_message()
            assert (message.kind, message.channel, message.pattern) == (
                b"pmessage",
                b"pat.x",
                b"pat.*",
            )


async def test_wrong_password(redis_server: ServerFactory) -> None:
    server = redis_server(password="s3cret")
    for protocol in (3, 2):
        with pytest.raises(rex.AuthenticationError):
            async with open_client(server.url, password="wrong", protocol=protocol):
                pass
        # no password: the error says so in words, not in the server's ("HELLO must be called
        # with the client already authenticated" on RESP3, "Authentication required" on RESP2)
        address = f"127.0.0.1:{server.port}"
        with pytest.raises(rex.AuthenticationError, match=f"^{address} requires a password and "):
            async with open_client(server.url, protocol=protocol):
                pass
        async with open_client(server.url, password="s3cret", protocol=protocol) as client:
            assert await client.execute("PING") == b"PONG"


async def test_acl_user_in_url(redis_server: ServerFactory) -> None:
    server = redis_server(acl_users=["alice on >wonder%land ~* &* +@all"])
    url = server.url.replace("redis://", "redis://alice:wonder%25land@")
    async with open_client(url) as client:
        assert await client.execute("ACL", "WHOAMI") == b"alice"
    with pytest.raises(rex.AuthenticationError):
        async with open_client(url.replace("wonder", "blunder")):
            pass


async def test_unknown_host_is_said_in_words() -> None:
    # the resolver's error code (-2) is no errno: os.strerror would say "Unknown error -2"
    with pytest.raises(rex.ConnectionError) as caught:
        async with open_client("redis://no-such-host.invalid:6379"):
            pass
    message = str(caught.value)
    assert message.startswith("Error connecting to no-such-host.invalid:6379: cannot resolve ")
    assert "Unknown error" not in message


async def test_unreachable_port() -> None:
    port = free_port()
    with pytest.raises(rex.ConnectionError) as info:
        async with open_client(f"redis://127.0.0.1:{port}"):
            pass
    assert str(info.value) == f"Error connecting to 127.0.0.1:{port}: Connection refused"


async def test_connect_timeout(redis_server: ServerFactory) -> None:
    server = redis_server()
    server.pause()  # accepts TCP connections (kernel backlog) but never answers HELLO
    try:
        with pytest.raises(rex.TimeoutError, match=f"127.0.0.1:{server.port}"):
            async with open_client(server.url, socket_connect_timeout=0.2):
                pass
    finally:
        server.resume()


async def test_tls(redis_server: ServerFactory) -> None:
    server = redis_server(tls=True)
    tls = redis_server.tls_files()
    async with open_client(server.url, ssl_ca_certs=tls.ca_file) as client:
        assert await client.execute("PING") == b"PONG"
        # keepalive is set on the TCP socket under the TLS layer
        (conn,) = client.pool.idle_connections
        sock = conn._stream.extra(anyio.abc.SocketAttribute.raw_socket)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("c")
            await client.execute("PUBLISH", "c", "tls")
            with anyio.fail_after(5):
                assert (await pubsub.get_message()).data == b"tls"
    # without our CA the certificate does not verify
    with pytest.raises(rex.ConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        async with open_client(server.url):
            pass


async def test_tls_with_client_certificate(redis_server: ServerFactory) -> None:
    server = redis_server(tls=True, tls_auth_clients=True)
    tls = redis_server.tls_files()
    async with open_client(
        server.url,
        ssl_ca_certs=tls.ca_file,
        ssl_certfile=tls.client_cert_file,
        ssl_keyfile=tls.client_key_file,
    ) as client:
        assert await client.execute("PING") == b"PONG"


async def test_unix_socket(redis_server: ServerFactory) -> None:
    server = redis_server()
    async with open_client(f"unix://{server.socket_path}", db=1) as client:
        assert await client.execute("PING") == b"PONG"
        assert client.address == server.socket_path


async def test_paused_server_times_out_then_recovers(redis_server: ServerFactory) -> None:
    server = redis_server()
    async with open_client(server.url, socket_timeout=0.3) as client:
        (conn,) = client.pool.idle_connections
        server.pause()  # the process is frozen; its kernel keeps the connection open
        try:
            start = time.monotonic()
            with anyio.fail_after(5), pytest.raises(rex.TimeoutError, match=str(server.port)):
                await client.execute("PING")
            assert 0.3 <= time.monotonic() - start < 1.5
            assert conn.is_closed
            assert client.pool.idle_connections == []
        finally:
            server.resume()
        assert await client.execute("PING") == b"PONG"


async def test_pubsub_notices_a_paused_server(redis_server: ServerFactory) -> None:
    server = redis_server()
    async with (
        open_client(
            server.url, health_check_interval=0.1, socket_timeout=0.3, socket_connect_timeout=0.3
        ) as client,
        client.pubsub(backoff=Backoff(initial=0.05, maximum=0.2)) as pubsub,
    ):
        await pubsub.subscribe("chan")
        paused = pubsub.connection
        assert paused is not None
        server.pause()
        try:
            with anyio.fail_after(5):
                # the subscriber's state, changed by its own tasks: polled
                while not paused.is_closed:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        finally:
            server.resume()
        with anyio.fail_after(5):
            assert (await pubsub.get_message()).kind == b"reconnected"
            # (the server may not have dropped the closed connection yet: 1 or 2 receivers)
            assert await client.execute("PUBLISH", "chan", "after") >= 1
            assert (await pubsub.get_message()).data == b"after"
