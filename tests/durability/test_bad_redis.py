"""Pointed at the wrong Redis, a worker or a producer fails at once, clearly, and leaves nothing.

Each case runs three ways: a producer (``async with worker:`` then ``enqueue``), a worker run
directly (``await worker.run_async()``) and an embedded worker (``tg.start(worker.run_async)``).
Each must raise one specific exception whose message names the server and what is wrong, without
hanging, and leave nothing behind: no connection (checked on the server, by client name), no lease
thread, no connected client on the worker.

Servers: the shared one with a db index it does not have, a throwaway replica, a throwaway
``redis-server`` with ``FUNCTION`` renamed away, and -- the one case a real 7.0 server cannot play
-- :class:`OldRedis`, a tiny RESP server that answers the handshake as Redis 6.2 or 5.0 would.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import hiredis
import pytest
from anyio.abc import SocketAttribute
from redis import exceptions as rex
from servers import RedisServer, ServerFactory, free_port

from streaq import StreaqError, Worker
from streaq._redis import RedisVersionError, open_client
from streaq.task import AsyncRegisteredTask

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: how each case uses the worker (see the module docstring)
ROLES = ["producer", "run_async", "embedded"]
#: an operation that would hang is a failure too
DEADLINE = 10.0


ServerMaker = Callable[[list[str]], RedisServer]
E = TypeVar("E", bound=Exception)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerMaker]:
    """Start throwaway ``redis-server`` processes with extra options; all killed in teardown."""
    servers: list[RedisServer] = []

    def make(extra_args: list[str]) -> RedisServer:
        server = RedisServer(tmp_path / f"server-{len(servers)}", extra_args=extra_args)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop(kill=True)


def _build(
    url: str, queue_name: str, **redis_kwargs: Any
) -> tuple[Worker[Any], AsyncRegisteredTask[[], int]]:
    # the client name lets a test find this worker's connections on the server
    worker: Worker[Any] = Worker(
        redis_url=url,
        queue_name=queue_name,
        handle_signals=False,
        redis_kwargs={"client_name": f"bad-redis-{queue_name}", **redis_kwargs},
    )

    @worker.task
    async def noop() -> int:
        return 1

    return worker, noop


async def _use(worker: Worker[Any], task: AsyncRegisteredTask[[], int], role: str) -> None:
    """Use ``worker`` as ``role`` does; every test expects this to raise."""
    if role == "producer":
        async with worker:
            await task.enqueue()
    elif role == "run_async":
        await worker.run_async()
    else:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            tg.cancel_scope.cancel()


async def _error_of(
    worker: Worker[Any], task: AsyncRegisteredTask[[], int], role: str, expected: type[E]
) -> E:
    """The exception of exactly the class ``expected`` that ``role`` raised, within DEADLINE."""
    if role == "embedded":
        # the embedding application's task group wraps it, alone, in a group
        with pytest.RaisesGroup(pytest.RaisesExc(expected, check=_exactly(expected))) as group:
            with anyio.fail_after(DEADLINE):
                await _use(worker, task, role)
        error = group.value.exceptions[0]
    else:
        with pytest.raises(expected, check=_exactly(expected)) as info:
            with anyio.fail_after(DEADLINE):
                await _use(worker, task, role)
        error = info.value
    assert isinstance(error, expected)
    return error


def _exactly(cls: type[BaseException]) -> Callable[[BaseException], bool]:
    # not merely a subclass: ReadOnlyError is a ResponseError, and must not pass for one
    return lambda error: type(error) is cls


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` holds (a server notices closed connections a moment later)."""
    try:
        with anyio.fail_after(5):
            # polled: nothing signals a change of the server's client list
            while not await check():  # noqa: ASYNC110
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _assert_left_nothing(worker: Worker[Any], server_url: str | None) -> None:
    """No connected client, no lease thread; no connection of ``worker`` left on the server."""
    with pytest.raises(StreaqError, match="not connected"):
        await worker.queue_size()
    threads = [t.name for t in threading.enumerate() if t.name.endswith(worker.id)]
    assert threads == []
    if server_url is None:
        return
    name = worker.redis_kwargs["client_name"]
    async with open_client(server_url) as admin:

        async def gone() -> bool:
            clients = (await admin.execute("CLIENT", "LIST")).decode()
            return f"name={name} " not in clients

        await _eventually(gone, f"the connections of {name} to close")


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.mark.parametrize("role", ROLES)
async def test_nothing_listening(queue_name: str, role: str) -> None:
    # a worker that cannot reach Redis at start fails (a supervisor restarts it); only a worker
    # that was running waits an outage out
    port = free_port()
    worker, task = _build(f"redis://127.0.0.1:{port}", queue_name)
    error = await _error_of(worker, task, role, rex.ConnectionError)
    assert str(error) == f"Error connecting to 127.0.0.1:{port}: Connection refused"
    await _assert_left_nothing(worker, None)


@pytest.mark.parametrize("protocol", [3, 2])
@pytest.mark.parametrize("role", ROLES)
async def test_db_out_of_range(redis_url: str, queue_name: str, role: str, protocol: int) -> None:
    # the db is selected in the handshake: HELLO's pipeline (RESP3) or AUTH/SELECT/INFO (RESP2)
    worker, task = _build(_with_db(redis_url, 99), queue_name, protocol=protocol)
    error = await _error_of(worker, task, role, rex.ResponseError)
    address = urlsplit(redis_url).netloc.rpartition("@")[2]
    assert str(error) == (
        f"cannot select db 99 on {address}: DB index is out of range "
        "(the server has fewer databases: see its 'databases' setting)"
    )
    await _assert_left_nothing(worker, redis_url)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [3, 2])
async def test_wrong_password_is_reported_before_the_db(
    redis_server: ServerFactory, queue_name: str, protocol: int
) -> None:
    # SELECT fails as well without a login: the cause to report is the password
    server = redis_server(password="right")
    url = _with_db(server.url.replace("redis://", "redis://:wrong@"), 99)
    worker, task = _build(url, queue_name, protocol=protocol)
    error = await _error_of(worker, task, "producer", rex.AuthenticationError)
    assert "password" in str(error)


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
async def test_read_only_replica(make_server: ServerMaker, queue_name: str, role: str) -> None:
    master = make_server([])
    replica = make_server(["--replicaof", "127.0.0.1", str(master.port)])
    worker, task = _build(replica.url, queue_name)
    # not an endless retry: the client tries a fresh connection once (Sentinel failovers), then
    # says what is wrong
    error = await _error_of(worker, task, role, rex.ReadOnlyError)
    assert str(error) == (
        f"the server at 127.0.0.1:{replica.port} is a read-only replica (You can't write "
        "against a read only replica.); point streaq at the master (or use sentinel_nodes)"
    )
    await _assert_left_nothing(worker, replica.url)
    # and the same worker works against the master
    master_worker, master_task = _build(master.url, queue_name)
    async with master_worker:
        await master_task.enqueue()


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
async def test_functions_unavailable(make_server: ServerMaker, queue_name: str, role: str) -> None:
    # a 7.0 server that passes the version check but cannot load streaq's library (as with a
    # Redis-compatible server that reports 7.x without functions)
    server = make_server(["--rename-command", "FUNCTION", ""])
    worker, task = _build(server.url, queue_name)
    error = await _error_of(worker, task, role, RedisVersionError)
    assert str(error) == (
        f"the server at 127.0.0.1:{server.port} cannot run Redis functions (unknown command "
        "'FUNCTION'); streaq needs Redis >= 7.0 with FUNCTION and FCALL available (renamed or "
        "disabled with rename-command?)"
    )
    await _assert_left_nothing(worker, server.url)


class OldRedis:
    """A RESP server that answers the handshake as an old Redis and refuses everything else.

    With ``hello`` it answers ``HELLO 3`` as Redis 6 does (a RESP3 map naming its version);
    without, it does not know ``HELLO`` (Redis 5), so the client falls back to RESP2 and reads
    the version from ``INFO server``.

    :param version: the version it claims
    :param hello: whether it knows ``HELLO``
    """

    def __init__(self, version: str, *, hello: bool) -> None:
        self.version = version
        self.hello = hello
        self.port = 0
        #: connections accepted, and not closed yet
        self.accepted = 0
        self.open = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Listen on a free port until cancelled."""
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started()
            await listener.serve(self._handle)

    def _reply(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        if name == b"HELLO" and self.hello:
            fields: dict[bytes, bytes | int] = {
                b"server": b"redis",
                b"version": self.version.encode(),
                b"proto": 3,
            }
            out = [b"%%%d\r\n" % len(fields)]
            for key, value in fields.items():
                out.append(b"$%d\r\n%s\r\n" % (len(key), key))
                if isinstance(value, int):
                    out.append(b":%d\r\n" % value)
                else:
                    out.append(b"$%d\r\n%s\r\n" % (len(value), value))
            return b"".join(out)
        if name == b"INFO":
            info = b"# Server\r\nredis_version:%s\r\n" % self.version.encode()
            return b"$%d\r\n%s\r\n" % (len(info), info)
        if name in (b"AUTH", b"SELECT", b"CLIENT"):
            return b"+OK\r\n"
        return b"-ERR unknown command '%s'\r\n" % command[0]

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        reader = hiredis.Reader()
        try:
            async with stream:
                while True:
                    try:
                        reader.feed(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    while (command := reader.gets()) is not False:
                        await stream.send(self._reply(command))
        finally:
            self.open -= 1


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("version", "hello"), [("6.2.0", True), ("5.0.7", False)])
async def test_redis_too_old(queue_name: str, role: str, version: str, hello: bool) -> None:
    server = OldRedis(version, hello=hello)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        worker, task = _build(f"redis://127.0.0.1:{server.port}", queue_name)
        error = await _error_of(worker, task, role, RedisVersionError)
        assert str(error) == (
            "streaq needs Redis >= 7.0.0 (Redis functions and XAUTOCLAIM); "
            f"the server at 127.0.0.1:{server.port} runs {version}"
        )
        await _assert_left_nothing(worker, None)

        async def closed() -> bool:
            return server.open == 0

        await _eventually(closed, "the worker's connections to close")
        # the version is checked on the first connection, before anything else is opened
        assert server.accepted == 1
        tg.cancel_scope.cancel()
