"""Automatic pipelining: concurrent commands share round trips, each caller gets its own replies,
and cancellation or a server restart at any stage never desynchronises the others."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
from redis import exceptions as rex
from servers import ServerFactory

from streaq._redis import RedisClient, open_client

pytestmark = pytest.mark.anyio

Outcome = dict[str, Any]


async def _record(
    outcomes: Outcome, name: str, scope: anyio.CancelScope, call: Callable[[], Awaitable[Any]]
) -> None:
    with scope:
        try:
            outcomes[name] = await call()
        except rex.RedisError as exc:
            outcomes[name] = exc
        return
    outcomes[name] = "cancelled"


@asynccontextmanager
async def _one_batch(
    client: RedisClient, calls: Mapping[str, Callable[[], Awaitable[Any]]]
) -> AsyncIterator[tuple[Outcome, dict[str, anyio.CancelScope]]]:
    """Queue ``calls`` in order behind the pool's only connection, so they form one batch whose
    leader is the first; the body runs while they wait, then the connection is freed."""
    outcomes: Outcome = {}
    scopes = {name: anyio.CancelScope() for name in calls}
    held, _ = await client.pool.acquire()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for name, call in calls.items():
                tg.start_soon(_record, outcomes, name, scopes[name], call)
                await anyio.wait_all_tasks_blocked()
            await client.pool.release(held)
            yield outcomes, scopes


async def _assert_clean(client: RedisClient) -> None:
    assert all(conn.is_idle for conn in client.pool.idle_connections)
    assert client.pool.in_use == 0
    assert await client.execute("ECHO", "after") == b"after"


async def test_concurrent_commands_get_their_own_replies(redis_url: str, queue_name: str) -> None:
    rng = random.Random(18)
    sizes = [rng.choice([0, 1, 100, 10_000, 1_000_000]) for _ in range(120)]
    values = [bytes([65 + i % 26]) * size + str(i).encode() for i, size in enumerate(sizes)]
    got: dict[int, Any] = {}
    async with open_client(redis_url, max_connections=4) as client:
        batches = client.autopipe.batches

        async def one(i: int) -> None:
            key = f"{queue_name}:{i}"
            if i % 3 == 0:  # explicit pipelines ride along, their replies stay together
                got[i] = await client.pipeline([("SET", key, values[i]), ("GET", key)])
            else:
                got[i] = [
                    await client.execute("SET", key, values[i]),
                    await client.execute("GET", key),
                ]

        try:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(len(values)):
                        tg.start_soon(one, i)
            assert got == {i: [b"OK", value] for i, value in enumerate(values)}
            # far fewer round trips than commands: they were coalesced
            assert client.autopipe.batches - batches < len(values) * 5 // 3 // 2
        finally:
            await client.execute("DEL", *(f"{queue_name}:{i}" for i in range(len(values))))
        await _assert_clean(client)


async def test_error_reply_goes_only_to_its_caller(redis_url: str, queue_name: str) -> None:
    async with open_client(redis_url, max_connections=1) as client:
        try:
            await client.execute("SET", queue_name, "string")
            calls = {
                "a": lambda: client.execute("ECHO", "a"),
                "wrong": lambda: client.execute("LPUSH", queue_name, "x"),
                "c": lambda: client.execute("GET", queue_name),
            }
            batches = client.autopipe.batches
            async with _one_batch(client, calls) as (outcomes, _):
                pass
            assert client.autopipe.batches - batches == 1
            assert outcomes["a"] == b"a"
            assert outcomes["c"] == b"string"
            assert isinstance(outcomes["wrong"], rex.ResponseError)
            assert "WRONGTYPE" in str(outcomes["wrong"])
        finally:
            await client.execute("DEL", queue_name)
        await _assert_clean(client)


@pytest.mark.parametrize("victim", ["leader", "follower"])
async def test_cancel_while_queued(redis_url: str, victim: str) -> None:
    async with open_client(redis_url, max_connections=1) as client:
        calls = {name: partial(client.execute, "ECHO", name) for name in ("a", "b", "c")}
        cancelled = "a" if victim == "leader" else "b"
        async with _one_batch(client, calls) as (outcomes, scopes):
            # before the freed connection reaches the leader: the victim was never sent
            scopes[cancelled].cancel()
        expected: dict[str, Any] = {name: name.encode() for name in calls}
        expected[cancelled] = "cancelled"
        assert outcomes == expected
        (conn,) = client.pool.idle_connections
        await _assert_clean(client)
        assert client.pool.idle_connections == [conn]


@pytest.mark.parametrize("victim", ["leader", "follower"])
async def test_cancel_while_awaiting_replies(redis_url: str, queue_name: str, victim: str) -> None:
    async with open_client(redis_url, max_connections=1) as client, open_client(redis_url) as other:
        calls = {
            "a": lambda: client.execute("ECHO", "a"),
            "b": lambda: client.execute("BLPOP", queue_name, 10),
            "c": lambda: client.execute("ECHO", "c"),
        }
        cancelled = "a" if victim == "leader" else "c"
        async with _one_batch(client, calls) as (outcomes, scopes):
            await anyio.wait_all_tasks_blocked()  # written; "a" replied, "b" holds the rest
            scopes[cancelled].cancel()
            await anyio.wait_all_tasks_blocked()
            await other.execute("LPUSH", queue_name, "v")
        assert outcomes["b"] == [queue_name.encode(), b"v"]
        if victim == "leader":
            # its command ran and its reply was read before the cancellation was delivered
            assert outcomes["a"] in (b"a", "cancelled")
            assert outcomes["c"] == b"c"
        else:
            assert outcomes["a"] == b"a"
            assert outcomes["c"] == "cancelled"
        # the abandoned reply was read and dropped: the same connection serves the next command
        assert len(client.pool.idle_connections) == 1
        assert client.pool.idle_connections[0].is_idle
        await _assert_clean(client)


@pytest.mark.slow
async def test_server_restart_mid_batch(redis_server: ServerFactory, queue_name: str) -> None:
    server = redis_server()
    async with open_client(server.url, max_connections=1) as client, open_client(server.url) as spy:
        calls = {
            "a": lambda: client.execute("ECHO", "a"),
            "b": lambda: client.execute("BLPOP", queue_name, 10),
            "c": lambda: client.execute("ECHO", "c"),
        }
        async with _one_batch(client, calls) as (outcomes, _):
            # once the server blocks in BLPOP, the reply to ECHO is on its way to us: a reply byte
            # arrived, so the batch must not be resent. Server state, not ours: ask the server.
            while b"cmd=blpop" not in await spy.execute("CLIENT", "LIST"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            server.restart(kill=True)
        assert set(outcomes) == {"a", "b", "c"}, outcomes
        assert all(isinstance(outcome, rex.ConnectionError) for outcome in outcomes.values())
        assert await client.execute("ECHO", "later") == b"later"
        await _assert_clean(client)
