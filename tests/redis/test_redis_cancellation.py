"""Cancellation at every stage of a command; afterwards the client works and the pool is clean."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from servers import ServerFactory

from streaq._redis import RedisClient, open_client

pytestmark = pytest.mark.anyio


async def _cancel_when_blocked(call: Callable[[], Awaitable[Any]]) -> None:
    """Run ``call`` until every task is blocked (so it is waiting on I/O), then cancel it."""
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def run() -> None:
                try:
                    await call()
                finally:
                    done.set()

            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set(), "the call finished before it could be cancelled"
            tg.cancel_scope.cancel()


async def _assert_clean_and_working(client: RedisClient) -> None:
    """No broken connection is pooled, no slot leaked, and the next command succeeds."""
    assert all(conn.is_idle for conn in client.pool.idle_connections)
    assert client.pool.in_use == 0
    assert "waiting=0" in repr(client.pool)
    assert await client.execute("ECHO", "after") == b"after"


async def test_cancel_while_waiting_for_a_pooled_connection(redis_url: str) -> None:
    async with open_client(redis_url, max_connections=1) as client:
        held, _ = await client.pool.acquire()
        await _cancel_when_blocked(lambda: client.execute("PING"))
        assert "in_use=1 max=1 waiting=0" in repr(client.pool)
        await client.pool.release(held)
        await _assert_clean_and_working(client)
        assert client.pool.idle_connections == [held]


async def test_slot_granted_while_being_cancelled_is_passed_on(redis_url: str) -> None:
    async with open_client(redis_url, max_connections=1) as client:
        held, _ = await client.pool.acquire()
        results: list[bytes] = []
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()
            tg.start_soon(lambda: _run_in(first, client, results))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(lambda: _append(client, results))
            await anyio.wait_all_tasks_blocked()
            # Hand the slot to the first waiter and cancel it in the same step.
            await client.pool.release(held)
            first.cancel()
        assert results == [b"second"]
        await _assert_clean_and_working(client)


async def _run_in(scope: anyio.CancelScope, client: RedisClient, results: list[bytes]) -> None:
    with scope:
        results.append(await client.execute("ECHO", "first"))


async def _append(client: RedisClient, results: list[bytes]) -> None:
    results.append(await client.execute("ECHO", "second"))


@pytest.mark.slow
async def test_cancel_mid_write(redis_server: ServerFactory, queue_name: str) -> None:
    server = redis_server()
    async with open_client(server.url, max_connections=1) as client:
        (conn,) = client.pool.idle_connections
        server.pause()  # the server reads nothing, so a large write must block half-way
        try:
            payload = b"x" * (64 * 1024 * 1024)
            await _cancel_when_blocked(lambda: client.execute("SET", queue_name, payload))
        finally:
            server.resume()
        assert conn.is_closed
        await _assert_clean_and_working(client)


async def test_cancel_mid_read(redis_url: str, queue_name: str) -> None:
    async with open_client(redis_url, max_connections=1) as client:
        (conn,) = client.pool.idle_connections
        await _cancel_when_blocked(lambda: client.execute("BLPOP", queue_name, 5))
        assert conn.is_closed
        await _assert_clean_and_working(client)


async def test_cancel_blocking_read_on_dedicated(redis_url: str, queue_name: str) -> None:
    stream = f"{queue_name}:stream"
    async with open_client(redis_url) as client:
        try:
            await client.execute("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM")
            async with client.dedicated() as conn:
                client_id = await conn.execute("CLIENT", "ID")
                await _cancel_when_blocked(
                    lambda: conn.execute(
                        "XREADGROUP", "GROUP", "g", "c", "BLOCK", 5000, "STREAMS", stream, ">"
                    )
                )
                assert conn.is_closed
            # until the server has processed the closed socket it may still hand a new entry to
            # the blocked read (into its pending list, where a worker would reclaim it): wait
            with anyio.fail_after(5):
                # server state, not ours: nothing to wait on but the server itself
                while await client.execute("CLIENT", "LIST", "ID", client_id):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # a message added now is not swallowed by the cancelled read
            await client.execute("XADD", stream, "*", "f", "v")
            async with client.dedicated() as conn:
                reply = await conn.execute(
                    "XREADGROUP", "GROUP", "g", "c2", "BLOCK", 1000, "STREAMS", stream, ">"
                )
                assert reply is not None
            await _assert_clean_and_working(client)
        finally:
            await client.execute("DEL", stream)


async def test_cancel_pubsub_read(redis_url: str, queue_name: str) -> None:
    async with open_client(redis_url) as client, client.pubsub() as pubsub:
        await pubsub.subscribe(queue_name)
        await _cancel_when_blocked(pubsub.get_message)
        assert await client.execute("PUBLISH", queue_name, "m") == 1
        with anyio.fail_after(5):
            message = await pubsub.get_message()
        assert (message.kind, message.channel, message.data) == (
            b"message",
            queue_name.encode(),
            b"m",
        )
        await _assert_clean_and_working(client)


async def test_cancel_many_concurrent_commands(redis_url: str) -> None:
    async with open_client(redis_url, max_connections=3) as client:

        async def ping_forever() -> None:
            while True:
                assert await client.execute("ECHO", "x") == b"x"

        with anyio.move_on_after(0.3):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(ping_forever)
        await _assert_clean_and_working(client)
        assert len(client.pool.idle_connections) <= 3
