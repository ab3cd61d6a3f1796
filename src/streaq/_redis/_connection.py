"""One connection to one Redis server: a byte stream, a parser, a state, cancel-safe round trips.

Theory of operation
-------------------
A :class:`Connection` owns exactly one anyio byte stream (TCP, TLS over TCP, or a unix socket) and
one :class:`~streaq._redis._protocol.Parser`. Its state is ``IDLE`` (ready for a command), ``BUSY``
(a round trip is in flight) or ``CLOSED`` (never usable again). A round trip writes the whole packed
command (or pipeline) in one ``send`` and reads as many replies as commands were sent.

The invariant the pool relies on: **a round trip that does not complete normally closes the
connection.** If the task is cancelled, a timeout expires, or any error escapes mid-command, the
stream is closed under a shielded cancel scope and the state becomes ``CLOSED`` before the exception
propagates (the pattern of httpcore's HTTP/1.1 connection). So a late reply can never be read as the
answer to someone else's command. I/O errors are then mapped once to ``redis.exceptions``
(:func:`~streaq._redis._errors.map_io_error`). Server *error replies* are complete replies and leave
the connection ``IDLE``.

Every round trip is bounded by ``socket_timeout`` (30 s by default) plus, for a blocking command,
the time it asked the server to wait (``execute(..., block=seconds)``): a server that vanished
without closing the connection cannot hang its caller. The limit is enforced by the client's
:class:`~streaq._redis._watchdog.Watchdog` when one watches the connection (a clock read per round
trip), else by ``anyio.fail_after`` (a cancel scope per round trip: measurable on the hot path).
Either way an expired round trip closes the connection and raises ``TimeoutError``.
:attr:`Connection.reply_started` tells the pool whether any byte of a reply arrived, which decides
whether a failed command may be retried; :attr:`Connection.last_used` and :meth:`Connection.check`
serve the pool's health checks of idle connections.

:func:`connect` opens the stream and runs the handshake (``HELLO 3 [AUTH] [SETNAME]`` + ``SELECT``;
``AUTH``/``CLIENT SETNAME``/``SELECT``/``INFO server`` on RESP2 or servers without ``HELLO``),
all within ``socket_connect_timeout``, and switches TCP keepalive on for TCP and TLS connections
(``socket_keepalive*`` settings), so that the kernel drops a connection whose peer stopped
answering while it sat idle. It is the default *connector*: the pool only ever calls a
zero-argument ``async`` factory, so a topology layer (Sentinel, Cluster) supplies its own factory
that picks the address and then calls :func:`connect`.
"""

from __future__ import annotations

import contextlib
import enum
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from redis import exceptions as rex

from ._config import RedisConfig
from ._errors import map_io_error
from ._protocol import NEED_DATA, Arg, Parser, PushNotification, pack_command, pack_commands

if TYPE_CHECKING:
    from ._watchdog import Watchdog

__all__ = ["Connection", "Connector", "connect", "parse_version"]

_RECEIVE_SIZE = 65536
_PING = pack_command(("PING",))

# (option, config field) pairs of the keepalive timings this platform can set. macOS calls the
# idle time TCP_KEEPALIVE; a platform without an option keeps its system default for it.
_KEEPALIVE_OPTIONS = [
    (option, field)
    for option, field in (
        (
            getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)),
            "socket_keepalive_idle",
        ),
        (getattr(socket, "TCP_KEEPINTVL", None), "socket_keepalive_interval"),
        (getattr(socket, "TCP_KEEPCNT", None), "socket_keepalive_count"),
    )
    if option is not None
]

#: A zero-argument factory of ready (connected, handshaken) connections.
Connector = Callable[[], Awaitable["Connection"]]


class _State(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    CLOSED = "closed"


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse ``"7.0.15"`` (or ``"7.2.0-rc1"``) into ``(7, 0, 15)``.

    :param text: a Redis version string.
    :return: the major, minor and patch numbers (missing parts are 0).
    """
    numbers: list[int] = []
    for part in text.split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits or 0))
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


class Connection:
    """A connected, handshaken connection. Create with :func:`connect`.

    :param stream: the open byte stream.
    :param address: ``host:port`` or the socket path, for error messages.
    :param socket_timeout: per-round-trip limit in seconds, or ``None``.
    """

    __slots__ = (
        "_deadline",
        "_expired",
        "_parser",
        "_state",
        "_stream",
        "address",
        "last_used",
        "protocol",
        "reply_started",
        "server_version",
        "socket_timeout",
        "watchdog",
    )

    def __init__(
        self, stream: anyio.abc.ByteStream, address: str, socket_timeout: float | None
    ) -> None:
        self._stream = stream
        self._parser = Parser()
        self._state = _State.IDLE
        #: Per-round-trip limit in seconds (``None`` = none); may be changed between commands.
        self.socket_timeout = socket_timeout
        self.address = address
        #: The RESP version in use after the handshake (2 or 3).
        self.protocol = 2
        #: The server's version, read during the handshake.
        self.server_version: tuple[int, int, int] = (0, 0, 0)
        #: Whether any reply byte arrived during the current/last round trip.
        self.reply_started = False
        #: When the last round trip started (``time.monotonic()``), for the pool's health checks.
        self.last_used = time.monotonic()
        #: The watchdog enforcing ``socket_timeout`` (set by :meth:`Watchdog.watch`), if any.
        self.watchdog: Watchdog | None = None
        # monotonic time by which the current round trip must end (when a watchdog enforces it)
        self._deadline = math.inf
        # set when the watchdog cut a round trip: its I/O error is then reported as a timeout
        self._expired = False

    def __repr__(self) -> str:
        return f"<Connection {self.address} {self._state.value} resp{self.protocol}>"

    @property
    def is_idle(self) -> bool:
        """Whether the connection can take a command now."""
        return self._state is _State.IDLE

    @property
    def is_closed(self) -> bool:
        """Whether the connection is closed (for good)."""
        return self._state is _State.CLOSED

    async def execute(self, *args: Arg, block: float = 0.0) -> Any:
        """Run one command.

        :param args: command name and arguments.
        :param block: for a blocking command, the seconds it asks the server to wait (its
            ``BLOCK`` or timeout argument): the round trip may take that long *plus*
            ``socket_timeout``. ``math.inf`` for a command that may block forever.
        :return: the reply (see :mod:`streaq._redis._protocol` for its shape).
        :raises redis.exceptions.ResponseError: (or a subclass) for an error reply.
        :raises redis.exceptions.ConnectionError: when the connection fails or is not idle.
        :raises redis.exceptions.TimeoutError: when the round trip's limit expires.
        """
        reply = await self.roundtrip(pack_command(args), None, block)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Run many commands in one write and one read pass.

        :param commands: the commands, each a sequence of name and arguments.
        :param raise_on_error: raise the first error reply after reading all replies; when false,
            error replies are returned as exception instances in the list.
        :return: one reply per command.
        :raises redis.exceptions.RedisError: as for :meth:`execute`.
        """
        replies: list[Any] = await self.roundtrip(pack_commands(commands), len(commands))
        if raise_on_error:
            raise_first_error(replies)
        return replies

    async def roundtrip(self, data: bytes, count: int | None, block: float = 0.0) -> Any:
        """Write packed commands and read their replies; the primitive under everything else.

        :param data: packed command(s).
        :param count: number of replies to read into a list, or ``None`` for exactly one reply
            returned as is (no list built).
        :param block: seconds the server may hold the reply on purpose, added to the limit
            (see :meth:`execute`).
        :return: the reply, or the list of replies. Error replies are returned, not raised.
        :raises redis.exceptions.ConnectionError: when the connection is not idle or fails.
        :raises redis.exceptions.TimeoutError: when the round trip's limit expires.
        """
        if self._state is not _State.IDLE:
            raise rex.ConnectionError(f"Connection to {self.address} is {self._state.value}")
        self._state = _State.BUSY
        self.reply_started = False
        self.last_used = now = time.monotonic()
        limit = self.socket_timeout
        try:
            if limit is None:
                await self._stream.send(data)
                result = await self._read(count)
            elif self.watchdog is not None and self.watchdog.running:
                # the hot path: the watchdog enforces the deadline (see _watchdog)
                self._deadline = now + limit + block
                await self._stream.send(data)
                result = await self._read(count)
            else:
                with anyio.fail_after(limit + block):
                    await self._stream.send(data)
                    result = await self._read(count)
        except BaseException as exc:
            await self._fail(exc)
            raise  # _fail raises the mapped error itself; this re-raises anything unmapped
        # the watchdog may have expired (closed) us just as the last reply arrived: the reply is
        # good, the connection is not
        if self._state is _State.BUSY:
            self._state = _State.IDLE
        return result

    async def check(self, timeout: float | None) -> bool:
        """``PING`` within ``timeout``: whether the connection still works.

        :param timeout: the limit for the round trip (instead of ``socket_timeout``).
        :return: ``True`` when the server answered (even with an error reply such as
            ``LOADING``: the connection works); ``False`` when the connection failed or the
            answer did not come in time -- the connection is closed then.
        """
        # A cancel scope of its own rather than the watchdog: checks are rare, and their limit is
        # shorter than the socket_timeout that sets the watchdog's tick, so it would be coarse.
        saved, self.socket_timeout = self.socket_timeout, None
        try:
            with anyio.fail_after(timeout):
                await self.roundtrip(_PING, None)
        except (rex.ConnectionError, TimeoutError):
            # (the cancelled round trip closed the connection before fail_after's TimeoutError)
            return False
        finally:
            self.socket_timeout = saved
        return True

    def overdue(self, now: float) -> bool:
        """Whether a round trip is in flight past its deadline (asked by the watchdog).

        :param now: the current ``time.monotonic()``.
        :return: ``True`` when :meth:`expire` should cut it.
        """
        return self._state is _State.BUSY and self._deadline <= now

    async def expire(self) -> None:
        """Cut the round trip in flight: close the connection, so that the task waiting on it
        wakes with an I/O error, reported as ``redis.exceptions.TimeoutError``."""
        if self._state is _State.BUSY:
            self._expired = True
            await self.aclose()

    async def _read(self, count: int | None) -> Any:
        if count is None:
            return await self.read_reply()
        return [await self.read_reply() for _ in range(count)]

    async def read_reply(self, *, skip_push: bool = True) -> Any:
        """Read the next reply from the stream (no state checks, no cleanup).

        This is the building block of :meth:`roundtrip`, and the reader loop of pub/sub, which
        owns its connection and wraps failures itself.

        :param skip_push: drop RESP3 push messages (they never answer a command).
        :return: the next reply.
        """
        parser = self._parser
        reply = parser.next_reply()
        while True:
            if reply is NEED_DATA:
                chunk = await self._stream.receive(_RECEIVE_SIZE)
                self.reply_started = True
                parser.feed(chunk)
            elif skip_push and type(reply) is PushNotification:
                pass
            else:
                return reply
            reply = parser.next_reply()

    async def send_raw(self, data: bytes) -> None:
        """Write packed commands without reading (pub/sub mode, where a reader task reads).

        :param data: packed command(s).
        :raises redis.exceptions.ConnectionError: when the connection is closed or fails; any
            interruption closes the connection.
        """
        if self._state is _State.CLOSED:
            raise rex.ConnectionError(f"Connection to {self.address} is closed")
        try:
            await self._stream.send(data)
        except BaseException as exc:
            await self._fail(exc)
            raise

    async def read_push(self) -> Any:
        """Read the next reply in pub/sub mode, closing the connection if interrupted.

        :return: the next reply, push messages included.
        :raises redis.exceptions.ConnectionError: when the connection fails.
        """
        if self._state is _State.CLOSED:
            raise rex.ConnectionError(f"Connection to {self.address} is closed")
        try:
            return await self.read_reply(skip_push=False)
        except BaseException as exc:
            await self._fail(exc)
            raise

    async def _fail(self, exc: BaseException) -> None:
        """Close after an interrupted operation, then raise the mapped error (if it maps)."""
        await self.aclose()
        mapped = map_io_error(exc, self.address)
        if mapped is not None:
            if self._expired:
                # the watchdog closed the stream under us: the I/O error is its doing
                mapped = rex.TimeoutError(f"Timeout talking to {self.address}")
            raise mapped from exc

    async def aclose(self) -> None:
        """Close the stream (idempotent). Shielded, so it completes even in a cancelled scope."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self.watchdog is not None:
            self.watchdog.forget(self)
        with anyio.CancelScope(shield=True):
            # Forcefully: a TLS close_notify exchange could block on a dead peer.
            await anyio.aclose_forcefully(self._stream)


def raise_first_error(replies: list[Any]) -> None:
    """Raise the first exception instance among pipeline replies, if any.

    :param replies: replies as returned with ``raise_on_error=False``.
    :raises redis.exceptions.RedisError: the first error reply.
    """
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _check_select(replies: list[Any], config: RedisConfig) -> None:
    """Raise a readable error when the handshake's ``SELECT`` (if any, first in ``replies``) failed.

    The server's own message ("DB index is out of range") names neither the db nor the server.
    """
    if not replies or not isinstance(replies[0], rex.ResponseError):
        return
    error = replies[0]
    hint = ""
    if "out of range" in str(error):
        hint = " (the server has fewer databases: see its 'databases' setting)"
    raise type(error)(f"cannot select db {config.db} on {config.address}: {error}{hint}")


def _check_auth(reply: Any, config: RedisConfig) -> None:
    """Raise a readable error when the server wants a password the config does not give.

    The server's words ("HELLO must be called with the client already authenticated, ...",
    "Authentication required") name neither the cause nor the fix.
    """
    if config.password is None and isinstance(reply, rex.AuthenticationError):
        raise rex.AuthenticationError(
            f"{config.address} requires a password and none was given: put it in the URL "
            "(redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... for an ACL user) "
            "or in redis_kwargs['password']"
        ) from None


async def _handshake(conn: Connection, config: RedisConfig) -> None:
    """Authenticate, name the client, select the db and learn the server version."""
    if config.protocol == 3:
        hello: list[Arg] = ["HELLO", 3]
        if config.password is not None:
            hello += ["AUTH", config.username or "default", config.password]
        if config.client_name is not None:
            hello += ["SETNAME", config.client_name]
        commands: list[Sequence[Arg]] = [hello]
        if config.db:
            commands.append(("SELECT", config.db))
        replies = await conn.pipeline(commands, raise_on_error=False)
        info = replies[0]
        unknown = isinstance(info, rex.ResponseError) and "unknown command" in str(info).lower()
        if not unknown:
            _check_auth(replies[0], config)
            raise_first_error(replies[:1])
            _check_select(replies[1:], config)
            conn.protocol = 3
            conn.server_version = parse_version(info[b"version"].decode())
            return
    # RESP2: the servers before 6.0 have no HELLO, or the caller asked for protocol 2.
    commands = []
    if config.password is not None:
        if config.username is not None:
            commands.append(("AUTH", config.username, config.password))
        else:
            commands.append(("AUTH", config.password))
    if config.client_name is not None:
        commands.append(("CLIENT", "SETNAME", config.client_name))
    if config.db:
        commands.append(("SELECT", config.db))
    commands.append(("INFO", "server"))
    replies = await conn.pipeline(commands, raise_on_error=False)
    # AUTH and SETNAME first: with wrong credentials SELECT fails too, and the cause is the AUTH
    first = len(commands) - (2 if config.db else 1)
    raise_first_error(replies[:first])
    _check_select(replies[first:-1], config)
    _check_auth(replies[-1], config)
    raise_first_error(replies[-1:])
    conn.protocol = 2
    for line in replies[-1].decode().splitlines():
        if line.startswith("redis_version:"):
            conn.server_version = parse_version(line.partition(":")[2])
            break


def _enable_keepalive(sock: socket.socket, config: RedisConfig) -> None:
    """Switch TCP keepalive on with the config's timings (those the platform supports).

    With the defaults (10 s idle, 5 s apart, 3 probes) the kernel drops a connection whose peer
    stopped answering about 25 s after it went quiet, instead of never (the system default waits
    two hours before the first probe). It matters where no round trip is in flight to time out:
    an idle pooled connection, a subscription, a blocking read.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, field in _KEEPALIVE_OPTIONS:
        # a kernel older than the headers Python was built with may refuse an option it names:
        # the connection is still good, with the system's default for that timing
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, getattr(config, field))


async def connect(config: RedisConfig, ssl_context: ssl.SSLContext | None = None) -> Connection:
    """Open a connection and run the handshake, both within ``socket_connect_timeout``.

    :param config: where and how to connect.
    :param ssl_context: the TLS context to use when ``config.ssl`` (built from the config if
        ``None``; pass one to avoid rebuilding it for every connection).
    :return: an idle connection.
    :raises redis.exceptions.ConnectionError: when the server cannot be reached
        ("Error connecting to host:port: reason").
    :raises redis.exceptions.TimeoutError: when connecting takes longer than the timeout.
    :raises redis.exceptions.AuthenticationError: for wrong credentials.
    """
    address = config.address
    conn: Connection | None = None
    try:
        with anyio.fail_after(config.socket_connect_timeout):
            stream: anyio.abc.ByteStream
            if config.path is not None:
                stream = await anyio.connect_unix(config.path)
            elif config.ssl:
                stream = await anyio.connect_tcp(
                    config.host,
                    config.port,
                    tls=True,
                    ssl_context=ssl_context or config.ssl_context(),
                    tls_hostname=config.host,
                    # Redis servers do not send close_notify; don't treat its absence as an error.
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(config.host, config.port)
            if config.path is None and config.socket_keepalive:
                _enable_keepalive(stream.extra(anyio.abc.SocketAttribute.raw_socket), config)
            conn = Connection(stream, address, config.socket_timeout)
            await _handshake(conn, config)
    except BaseException as exc:
        if conn is not None:
            await conn.aclose()
        mapped = map_io_error(exc, address, connecting=True)
        if mapped is None:
            raise
        raise mapped from exc
    return conn
