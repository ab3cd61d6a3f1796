"""Error mapping: server error replies and I/O failures become ``redis.exceptions``.

Theory of operation
-------------------
Errors are mapped exactly once, at the boundary where they enter the layer:

* **Server error replies** (``-PREFIX message``) are turned into exception *instances* by the
  protocol parser through :func:`error_from_reply`, which looks the first word of the message up in
  a table (``_PREFIXES``); a few generic ``ERR`` messages are recognised by substring
  (``_ERR_SUBSTRINGS``). Unknown prefixes become :class:`redis.exceptions.ResponseError`. As in
  redis-py, the prefix is stripped from the message for the classes redis-py itself strips it for
  (``ERR``, ``NOSCRIPT``, ``MOVED`` ...), while the classes streaq adds (:class:`BusyGroupError`
  ...) keep the full message, which is what ``str(exc)`` showed with redis-py, so code matching
  ``"BUSYGROUP" in str(exc)`` still works.
* **I/O failures** (``OSError``, anyio's ``BrokenResourceError``/``EndOfStream``/
  ``ClosedResourceError``, ``ssl.SSLError``, an expired ``fail_after``) are mapped by
  :func:`map_io_error` when they escape a connection, with the server's address in the message.

Hierarchy (the streaq additions)::

    redis.exceptions.RedisError
    ├── RedisVersionError            the server is older than a feature needs
    └── redis.exceptions.ResponseError
        ├── BusyGroupError           BUSYGROUP: the consumer group already exists
        ├── NoGroupError             NOGROUP: no such key or consumer group
        └── WrongTypeError           WRONGTYPE: operation against a key of the wrong type
"""

from __future__ import annotations

import os
import socket
import ssl

import anyio
from redis import exceptions as rex

__all__ = [
    "RECOVERABLE",
    "BusyGroupError",
    "NoGroupError",
    "RedisVersionError",
    "WrongTypeError",
    "error_from_reply",
    "is_transient",
    "map_io_error",
]


class RedisVersionError(rex.RedisError):
    """The Redis server is older than a feature streaq relies on."""


class BusyGroupError(rex.ResponseError):
    """``BUSYGROUP``: ``XGROUP CREATE`` for a consumer group that already exists."""


class NoGroupError(rex.ResponseError):
    """``NOGROUP``: the stream key or the consumer group does not exist."""


class WrongTypeError(rex.ResponseError):
    """``WRONGTYPE``: an operation against a key holding the wrong kind of value."""


# prefix -> (exception class, strip the prefix from the message?)
_PREFIXES: dict[str, tuple[type[rex.RedisError], bool]] = {
    "NOSCRIPT": (rex.NoScriptError, True),
    "BUSYGROUP": (BusyGroupError, False),
    "NOGROUP": (NoGroupError, False),
    "WRONGTYPE": (WrongTypeError, False),
    "NOAUTH": (rex.AuthenticationError, True),
    "WRONGPASS": (rex.AuthenticationError, True),
    "NOPERM": (rex.NoPermissionError, True),
    "READONLY": (rex.ReadOnlyError, True),
    "MOVED": (rex.MovedError, True),
    "ASK": (rex.AskError, True),
    "TRYAGAIN": (rex.TryAgainError, True),
    "CLUSTERDOWN": (rex.ClusterDownError, True),
    "CROSSSLOT": (rex.ClusterCrossSlotError, True),
    "MASTERDOWN": (rex.MasterDownError, True),
    "LOADING": (rex.BusyLoadingError, True),
    "EXECABORT": (rex.ExecAbortError, True),
    "OOM": (rex.OutOfMemoryError, True),
}

# "ERR ..." messages that deserve a more precise class than ResponseError (substring -> class).
_ERR_SUBSTRINGS: tuple[tuple[str, type[rex.RedisError]], ...] = (
    ("max number of clients reached", rex.ConnectionError),
    ("Client sent AUTH, but no password is set", rex.AuthenticationError),
    ("invalid password", rex.AuthenticationError),
    ("invalid username-password pair", rex.AuthenticationError),
    ("wrong number of arguments for 'auth' command", rex.AuthenticationWrongNumberOfArgsError),
)


def error_from_reply(message: str) -> Exception:
    """Build the exception for a server error reply (the ``replyError`` hook of the parser).

    :param message: the error line without the leading ``-``,
        e.g. ``"NOSCRIPT No matching script"``.
    :return: an exception instance (never raised here).
    """
    prefix, _, rest = message.partition(" ")
    entry = _PREFIXES.get(prefix)
    if entry is not None:
        cls, strip = entry
        return cls(rest if strip else message)
    if prefix == "ERR":
        for needle, err_cls in _ERR_SUBSTRINGS:
            if needle in rest:
                return err_cls(rest)
        return rex.ResponseError(rest)
    return rex.ResponseError(message)


def _describe(exc: BaseException) -> str:
    """A short human reason for an I/O error, digging into anyio's multi-address failure."""
    if isinstance(exc, OSError):
        # anyio.connect_tcp raises OSError("All connection attempts failed") from the per-address
        # error (or a group of them when a name resolves to several addresses); that is the
        # useful reason ("Connection refused").
        cause = exc.__cause__
        if exc.strerror is None and isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            return _describe(cause.exceptions[0])
        if exc.strerror is None and isinstance(cause, OSError):
            return _describe(cause)
        if isinstance(exc, socket.gaierror):
            # its errno is a resolver code (-2), which os.strerror words as "Unknown error -2"
            return f"cannot resolve the host name ({exc.strerror or exc})"
        if exc.errno and not isinstance(exc, ssl.SSLError):
            # asyncio words ECONNREFUSED as "Connect call failed (...)"; the errno text is clearer.
            return os.strerror(exc.errno)
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, anyio.EndOfStream):
        return "Connection closed by server"
    if isinstance(exc, anyio.BrokenResourceError) and isinstance(exc.__cause__, OSError):
        # anyio raises it from the socket's error: "Connection reset by peer", or "Connection
        # timed out" when keepalive probes went unanswered
        return _describe(exc.__cause__)
    return str(exc) or type(exc).__name__


def map_io_error(exc: BaseException, address: str, *, connecting: bool = False) -> Exception | None:
    """Translate an I/O failure into the ``redis.exceptions`` class callers catch.

    :param exc: the exception that escaped a socket operation.
    :param address: ``host:port`` or the unix socket path, for the message.
    :param connecting: whether the failure happened while connecting (changes the wording).
    :return: the exception to raise instead, or ``None`` when ``exc`` is not an I/O failure
        (cancellation, a server error reply, a bug) and must propagate unchanged.
    """
    if isinstance(exc, rex.RedisError):
        return None
    verb = "connecting to" if connecting else "talking to"
    # Builtin TimeoutError covers both an expired fail_after and ETIMEDOUT (an OSError subclass).
    if isinstance(exc, TimeoutError):
        return rex.TimeoutError(f"Timeout {verb} {address}")
    if isinstance(
        exc, OSError | anyio.BrokenResourceError | anyio.EndOfStream | anyio.ClosedResourceError
    ):
        return rex.ConnectionError(f"Error {verb} {address}: {_describe(exc)}")
    return None


#: failures that say nothing about a command, only that the server cannot serve it now:
#: unreachable, too slow, or (during a Sentinel failover) still a replica
RECOVERABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    OSError,
)

# server replies refusing a command for now: loading a dataset, out of memory, busy running a
# script, a cluster settling or a replica without its master
_REFUSED_FOR_NOW: tuple[type[BaseException], ...] = (
    rex.BusyLoadingError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
    rex.ClusterDownError,
    rex.MasterDownError,
)
_REFUSED_PREFIXES = ("BUSY ", "UNBLOCKED", "NOREPLICAS", "MISCONF")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call may succeed when repeated unchanged a little later.

    :param exc: the error a call raised.
    :return: true for :data:`RECOVERABLE` failures and for replies by which the server refuses a
        command for now (``LOADING``, ``OOM``, ``BUSY``, ``TRYAGAIN``, ``CLUSTERDOWN``,
        ``MASTERDOWN``, ``UNBLOCKED``, ``NOREPLICAS``, ``MISCONF``); none of them ran the command.
    """
    if isinstance(exc, RECOVERABLE + _REFUSED_FOR_NOW):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_REFUSED_PREFIXES)
