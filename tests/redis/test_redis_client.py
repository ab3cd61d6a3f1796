"""Client round trips against the shared server: reply shapes, pipelines, functions, retries."""

from __future__ import annotations

import math

import anyio
import pytest
from redis import exceptions as rex

from streaq._redis import (
    BusyGroupError,
    FunctionLibrary,
    RedisVersionError,
    WrongTypeError,
    open_client,
    pairs,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
def protocol(request: pytest.FixtureRequest) -> int:
    """Both wire protocols."""
    value: int = request.param
    return value


def _library(queue_name: str) -> FunctionLibrary:
    name = queue_name.replace("-", "_")
    code = f"""#!lua name={name}
redis.register_function('table', function(keys, args)
  return {{args[1], 2, {{3, 'x'}}, redis.call('GET', keys[1])}}
end)
redis.register_function{{function_name='ro', callback=function(keys, args)
  return 'ro'
end, flags={{'no-writes'}}}}
redis.register_function('fail', function(keys, args)
  return redis.error_reply('BOOM it failed')
end)"""
    return FunctionLibrary(name=name, code=code)


async def test_reply_types(redis_url: str, queue_name: str, protocol: int) -> None:
    key = f"{queue_name}:k"
    async with open_client(redis_url, protocol=protocol) as client:
        try:
            assert await client.execute("SET", key, b"\x00\xff", "PX", 10_000) == b"OK"
            assert await client.execute("GET", key) == b"\x00\xff"
            assert await client.execute("GET", f"{queue_name}:missing") is None
            assert await client.execute("INCRBY", f"{queue_name}:n", 5) == 5
            await client.execute("HSET", f"{queue_name}:h", "a", 1, "b", 2.5)
            hash_reply = await client.execute("HGETALL", f"{queue_name}:h")
            assert dict(pairs(hash_reply)) == {b"a": b"1", b"b": b"2.5"}
            assert isinstance(hash_reply, dict if protocol == 3 else list)
            await client.execute("SADD", f"{queue_name}:s", "x", "y")
            assert sorted(await client.execute("SMEMBERS", f"{queue_name}:s")) == [b"x", b"y"]
            await client.execute("ZADD", f"{queue_name}:z", 1.5, "m")
            score = await client.execute("ZSCORE", f"{queue_name}:z", "m")
            assert score == (1.5 if protocol == 3 else b"1.5")
            if protocol == 3:
                assert await client.execute("ZINCRBY", f"{queue_name}:z", math.inf, "m") == math.inf
            assert await client.execute("LRANGE", f"{queue_name}:none", 0, -1) == []
            with pytest.raises(WrongTypeError, match="WRONGTYPE"):
                await client.execute("LPUSH", key, "x")
            # the connection survives an error reply
            assert await client.execute("ECHO", "still here") == b"still here"
        finally:
            await client.execute("DEL", *(f"{queue_name}:{s}" for s in "knhsz"))


async def test_stream_replies(redis_url: str, queue_name: str, protocol: int) -> None:
    stream = f"{queue_name}:stream"
    async with open_client(redis_url, protocol=protocol) as client:
        try:
            entry_id = await client.execute("XADD", stream, "*", "f", "v")
            await client.execute("XGROUP", "CREATE", stream, "g", "0")
            with pytest.raises(BusyGroupError, match="BUSYGROUP"):
                await client.execute("XGROUP", "CREATE", stream, "g", "0")
            async with client.dedicated() as conn:
                reply = await conn.execute(
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    10,
                    "BLOCK",
                    100,
                    "STREAMS",
                    stream,
                    ">",
                )
                assert pairs(reply) == [(stream.encode(), [[entry_id, [b"f", b"v"]]])]
                empty = await conn.execute(
                    "XREADGROUP", "GROUP", "g", "c", "BLOCK", 10, "STREAMS", stream, ">"
                )
                assert empty is None
        finally:
            await client.execute("DEL", stream)


async def test_pipeline_with_failing_command(redis_url: str, queue_name: str) -> None:
    a, s = f"{queue_name}:a", f"{queue_name}:s"
    async with open_client(redis_url) as client:
        try:
            await client.execute("SET", s, "text")
            commands = [("SET", a, 1), ("INCR", s), ("GET", a)]
            replies = await client.pipeline(commands, raise_on_error=False)
            assert replies[0] == b"OK"
            assert isinstance(replies[1], rex.ResponseError)
            assert replies[2] == b"1"
            with pytest.raises(rex.ResponseError, match="not an integer"):
                await client.pipeline(commands)
            assert await client.pipeline([]) == []
            assert await client.execute("GET", a) == b"1"
        finally:
            await client.execute("DEL", a, s)


async def test_functions_load_and_reload(redis_url: str, queue_name: str, protocol: int) -> None:
    library = _library(queue_name)
    key = f"{queue_name}:k"
    async with open_client(redis_url, protocol=protocol) as client:
        try:
            await client.execute("SET", key, "val")
            assert await client.fcall(library, "table", [key], ["a"]) == [
                b"a",
                2,
                [3, b"x"],
                b"val",
            ]
            assert await client.fcall_ro(library, "ro", [key]) == b"ro"
            with pytest.raises(rex.ResponseError, match="BOOM"):
                await client.fcall(library, "fail")
            # The server forgets the library: calls reload it transparently, once for many calls.
            await client.execute("FUNCTION", "DELETE", library.name)
            generation = client._functions._generation
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(client.fcall, library, "ro", [key])
            assert client._functions._generation == generation + 1
            await client.execute("FUNCTION", "DELETE", library.name)
            replies = await client.fcall_pipeline(
                library, [("table", [key], ["b"]), ("fail", [], []), ("ro", [key], [])],
                raise_on_error=False,
            )  # fmt: skip
            assert replies[0] == [b"b", 2, [3, b"x"], b"val"]
            assert isinstance(replies[1], rex.ResponseError)
            assert replies[2] == b"ro"
            with pytest.raises(rex.ResponseError, match="BOOM"):
                await client.fcall_pipeline(library, [("ro", [key], []), ("fail", [], [])])
        finally:
            await client.execute("DEL", key)
            await client.execute("FUNCTION", "DELETE", library.name)


def test_function_library_validates_shebang() -> None:
    FunctionLibrary("lib_a", "#!lua name=lib_a\n")
    with pytest.raises(ValueError, match="name=lib_a"):
        FunctionLibrary("lib_a", "#!lua name=lib_b\n")
    with pytest.raises(ValueError, match="name=lib_a"):
        FunctionLibrary("lib_a", "redis.register_function('x', ...)")


async def test_require_version(redis_url: str) -> None:
    async with open_client(redis_url) as client:
        assert client.server_version >= (7, 0, 0)
        client.require_version((7, 0, 0), "FUNCTION and XAUTOCLAIM")
        client.server_version = (6, 2, 1)
        with pytest.raises(RedisVersionError) as info:
            client.require_version((7, 0, 0), "FUNCTION and XAUTOCLAIM")
    assert str(info.value) == (
        "streaq needs Redis >= 7.0.0 (FUNCTION and XAUTOCLAIM); "
        f"the server at {client.address} runs 6.2.1"
    )


async def test_unknown_option_is_a_type_error(redis_url: str) -> None:
    with pytest.raises(TypeError, match="sockettimeout"):
        async with open_client(redis_url, sockettimeout=1):
            pass


async def test_client_name_and_db(redis_url: str, queue_name: str) -> None:
    async with open_client(redis_url, client_name=queue_name, db=3) as client:
        assert await client.execute("CLIENT", "GETNAME") == queue_name.encode()
        info = await client.execute("CLIENT", "INFO")
        assert b" db=3 " in info


async def test_idle_connection_killed_by_server_is_retried_once(redis_url: str) -> None:
    async with open_client(redis_url, max_connections=2) as client:
        client_id = await client.execute("CLIENT", "ID")
        (stale,) = client.pool.idle_connections
        async with client.dedicated() as killer:
            assert await killer.execute("CLIENT", "KILL", "ID", client_id) == 1
        assert await client.execute("PING") == b"PONG"
        assert stale.is_closed
        assert await client.execute("CLIENT", "ID") != client_id
        assert repr(client.pool).startswith("<ConnectionPool idle=1 in_use=0 max=2")


async def test_socket_timeout(redis_url: str, queue_name: str) -> None:
    async with open_client(redis_url, socket_timeout=0.2) as client:
        (conn,) = client.pool.idle_connections
        with pytest.raises(rex.TimeoutError, match=client.address):
            await client.execute("BLPOP", f"{queue_name}:empty", 5)
        assert conn.is_closed
        assert client.pool.idle_connections == []
        assert await client.execute("ECHO", "ok") == b"ok"
