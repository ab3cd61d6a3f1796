"""Connection settings: one frozen :class:`RedisConfig` built from a URL plus keyword arguments.

Theory of operation
-------------------
:func:`parse_config` reads a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL with redis-py's
``parse_url`` (so user, password, db path segment and query parameters mean what they mean for
redis-py) without its query string, converts every query parameter itself (:func:`_coerce`: one
reading per field, so ``socket_timeout=none`` means "no limit" and ``socket_keepalive=maybe`` is an
error rather than true), then applies keyword arguments on top. Every setting has exactly one name,
the field name of :class:`RedisConfig`; an unknown keyword is a ``TypeError``, and an unknown query
parameter or a value of the wrong type a ``ValueError``, so a typo never passes silently.
Dead peers. The defaults bound every wait on a server that vanished without closing its connections
(a crashed host, a dropped network path, a frozen process): ``socket_timeout`` (30 s) bounds every
round trip -- a blocking command's own ``BLOCK`` time is added to it, see
:meth:`~streaq._redis._connection.Connection.execute` --, TCP keepalive (probes after 10 s idle,
every 5 s, 3 unanswered probes drop the connection: about 25 s) notices a dead peer on an idle
connection, and ``health_check_interval`` (30 s) makes the pool ``PING`` a connection that sat idle
that long before handing it out, and the pub/sub reader ``PING`` a silent subscription. 30 s is
far above any command streaq sends (a slow server is not a dead one, and a command cut by the
timeout may have run) yet well inside a worker's default 60 s ``idle_timeout``.

The config is immutable and hashable: a topology connector (Sentinel, Cluster) derives per-node
configs from it with :func:`dataclasses.replace` (``host``/``port``) instead of re-parsing.
:meth:`RedisConfig.ssl_context` builds the ``SSLContext`` once per call site.

Secrets. The password never leaves the config but for ``AUTH``: its ``repr`` shows ``***``,
:func:`mask_url` is how a URL is shown in log lines, and a URL that cannot be parsed is refused
without being echoed (with its ``@`` missing, the password would read as the port).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from ssl import (
    CERT_NONE,
    CERT_OPTIONAL,
    CERT_REQUIRED,
    SSLContext,
    VerifyMode,
    create_default_context,
)
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

__all__ = ["RedisConfig", "mask_url", "parse_config"]

# (the ssl names are imported one by one: the ``ssl`` field would shadow the module in the class)
_CERT_REQS = {"none": CERT_NONE, "optional": CERT_OPTIONAL, "required": CERT_REQUIRED}

_KEEPALIVE_TIMINGS = (
    "socket_keepalive_idle",
    "socket_keepalive_interval",
    "socket_keepalive_count",
)

# redis-py's parse_url is untyped; this is the shape it returns.
_parse_url: Callable[[str], dict[str, Any]] = parse_url


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    """Everything needed to open and set up one connection.

    :param host: server host name or address (TCP).
    :param port: server port (TCP).
    :param path: unix socket path; when set, ``host``/``port`` are ignored.
    :param ssl: whether to speak TLS (``rediss://``).
    :param username: ACL user (``None`` = the default user).
    :param password: password for ``AUTH``/``HELLO AUTH``.
    :param db: database index selected after connecting.
    :param client_name: name set with ``CLIENT SETNAME``.
    :param protocol: 3 (``HELLO 3``, falling back to 2 on servers without ``HELLO``) or 2.
    :param socket_timeout: limit in seconds for one round trip (``None`` = no limit); a blocking
        command gets its ``BLOCK`` time on top. Expiry raises ``redis.exceptions.TimeoutError``
        and closes the connection.
    :param socket_connect_timeout: limit for connecting plus the handshake, in seconds
        (``None`` = no limit).
    :param socket_keepalive: enable TCP keepalive on TCP and TLS connections.
    :param socket_keepalive_idle: seconds a connection is idle before the first probe.
    :param socket_keepalive_interval: seconds between probes.
    :param socket_keepalive_count: unanswered probes after which the kernel drops the connection.
    :param health_check_interval: a pooled connection idle longer than this many seconds is
        checked with ``PING`` before it is handed out (a dead one is replaced), and a pub/sub
        connection silent this long is pinged; ``0`` disables both.
    :param max_connections: size of the connection pool.
    :param ssl_ca_certs: CA bundle file for verifying the server.
    :param ssl_certfile: client certificate file (mutual TLS).
    :param ssl_keyfile: client private key file (mutual TLS).
    :param ssl_cert_reqs: ``"none"``, ``"optional"`` or ``"required"`` (or an ``VerifyMode``).
    :param ssl_check_hostname: whether the certificate must match ``host``.
    """

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    client_name: str | None = None
    protocol: int = 3
    socket_timeout: float | None = 30.0
    socket_connect_timeout: float | None = 5.0
    socket_keepalive: bool = True
    socket_keepalive_idle: int = 10
    socket_keepalive_interval: int = 5
    socket_keepalive_count: int = 3
    health_check_interval: float = 30.0
    max_connections: int = 64
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str | VerifyMode = "required"
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in (2, 3):
            raise ValueError(f"protocol must be 2 or 3, not {self.protocol!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {self.max_connections!r}")
        if isinstance(self.ssl_cert_reqs, str) and self.ssl_cert_reqs not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}")
        for name in ("socket_timeout", "socket_connect_timeout"):
            value = getattr(self, name)
            # ``not value > 0`` also refuses NaN
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None")
        for name in _KEEPALIVE_TIMINGS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)!r}")
        if not self.health_check_interval >= 0:
            raise ValueError(
                f"health_check_interval must be >= 0 (0 disables), "
                f"not {self.health_check_interval!r}"
            )

    def __repr__(self) -> str:
        # the generated repr would show the password
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            hidden = field.name == "password" and value is not None
            shown.append(f"{field.name}={'***' if hidden else repr(value)}")
        return f"RedisConfig({', '.join(shown)})"

    @property
    def address(self) -> str:
        """``host:port``, or the unix socket path: how errors name the server."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    @property
    def health_check_timeout(self) -> float | None:
        """How long a health check ``PING`` may take: the shorter of ``socket_timeout`` and
        ``socket_connect_timeout`` (``None`` when neither is set).

        A new connection gets ``socket_connect_timeout`` to answer its handshake; a check that
        decides between an old connection and a new one deserves no more.
        """
        limits = [t for t in (self.socket_timeout, self.socket_connect_timeout) if t is not None]
        return min(limits, default=None)

    def ssl_context(self) -> SSLContext:
        """Build the TLS context for this config.

        :return: a client-side context honouring the ``ssl_*`` settings.
        """
        reqs = self.ssl_cert_reqs
        verify = _CERT_REQS[reqs] if isinstance(reqs, str) else reqs
        context = create_default_context(cafile=self.ssl_ca_certs)
        # check_hostname must be switched off before verify_mode may drop to CERT_NONE.
        context.check_hostname = self.ssl_check_hostname and verify != CERT_NONE
        context.verify_mode = verify
        if self.ssl_certfile is not None:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


_FIELDS = {field.name: field for field in dataclasses.fields(RedisConfig)}


def _seconds_or_none(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


_FLAGS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def _flag(value: str) -> bool:
    flag = _FLAGS.get(value.lower())
    if flag is None:
        raise ValueError(value)
    return flag


# How each non-string field is read from a URL query, and what to say when it cannot be (a test
# checks that no such field is missing). The others -- host, path, user, password, client name,
# the ssl_* files -- stay strings, as parse_qs unquoted them.
_READERS: dict[str, tuple[Callable[[str], Any], str]] = {
    **dict.fromkeys(
        ("socket_timeout", "socket_connect_timeout"), (_seconds_or_none, "seconds or none")
    ),
    "health_check_interval": (float, "seconds"),
    **dict.fromkeys(
        ("port", "db", "protocol", "max_connections", *_KEEPALIVE_TIMINGS), (int, "an integer")
    ),
    **dict.fromkeys(("ssl", "ssl_check_hostname", "socket_keepalive"), (_flag, "true or false")),
}


def _coerce(name: str, value: str) -> Any:
    """Convert one URL query value to the type of the field it sets.

    :raises ValueError: naming the parameter, when the value does not fit its type.
    """
    reader = _READERS.get(name)
    if reader is None:
        return value
    convert, expected = reader
    try:
        return convert(value)
    except ValueError:
        raise ValueError(
            f"invalid value {value!r} for {name!r} in Redis URL: expected {expected}"
        ) from None


_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password=)[^&]*")


def mask_url(url: str) -> str:
    """``url`` with its password shown as ``***``: the one in the user info
    (``redis://user:***@host``) and a ``password`` query parameter. It never raises, so it may
    describe a URL that does not parse; a password with ``@`` or ``/`` in it is still hidden.
    """
    head, question, query = url.partition("?")
    scheme, separator, rest = head.partition("://")
    userinfo, at, hostinfo = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = _QUERY_PASSWORD.sub(r"\1\2***", query)
    return f"{scheme}{separator}{rest}{question}{query}"


def parse_config(url: str, **kwargs: Any) -> RedisConfig:
    """Build a :class:`RedisConfig` from a URL and keyword overrides.

    :param url: ``redis://[[user]:password@]host[:port][/db][?option=value...]``, ``rediss://...``
        or ``unix://[[user]:password@]/path/to.sock[?db=N...]``.
    :param kwargs: any :class:`RedisConfig` field; wins over the URL.
    :return: the frozen config.
    :raises TypeError: for an unknown keyword argument.
    :raises ValueError: for a malformed URL, an unknown query parameter or an invalid value.
    """
    unknown = sorted(set(kwargs) - _FIELDS.keys())
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) for a Redis client: {', '.join(unknown)}")
    # redis-py would convert the query parameters it knows with its own, laxer rules (any word but
    # "false"-like ones is true; no way to say "no timeout"): it gets the URL without them.
    try:
        parsed = _parse_url(url.partition("?")[0])
    except ValueError as exc:
        # urllib quotes what it cannot read, e.g. a "port" that is the password when the URL
        # lacks its "@": say what is wrong, not what was read
        reason = re.sub(r"'[^']*'", "'***'", str(exc))
        raise ValueError(f"malformed Redis URL: {reason}") from None
    connection_class = parsed.pop("connection_class", None)
    settings: dict[str, Any] = {}
    if connection_class is SSLConnection:
        settings["ssl"] = True
    elif connection_class is UnixDomainSocketConnection:
        settings["path"] = parsed.pop("path")
    settings.update(parsed)
    # the first value of a repeated parameter wins, and empty ones are ignored, as in redis-py
    for name, values in parse_qs(urlsplit(url).query).items():
        if name not in _FIELDS:
            raise ValueError(f"unknown option {name!r} in Redis URL")
        settings[name] = _coerce(name, values[0])
    settings.update(kwargs)
    return RedisConfig(**settings)
