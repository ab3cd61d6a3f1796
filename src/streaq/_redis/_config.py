"""Connection settings: one frozen :class:`RedisConfig` built from a URL plus keyword arguments.

Theory of operation
-------------------
:func:`parse_config` reads a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL with redis-py's
``parse_url`` (so user, password, db path segment and query parameters mean what they mean for
redis-py), converts the query values it knows to their types, then applies keyword arguments on top.
Every setting has exactly one name, the field name of :class:`RedisConfig`; an unknown keyword is a
``TypeError`` and an unknown query parameter a ``ValueError``, so a typo never passes silently.
The config is immutable and hashable: a topology connector (Sentinel, Cluster) derives per-node
configs from it with :func:`dataclasses.replace` (``host``/``port``) instead of re-parsing.
:meth:`RedisConfig.ssl_context` builds the ``SSLContext`` once per call site.
"""

from __future__ import annotations

import dataclasses
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

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

__all__ = ["RedisConfig", "parse_config"]

# (the ssl names are imported one by one: the ``ssl`` field would shadow the module in the class)
_CERT_REQS = {"none": CERT_NONE, "optional": CERT_OPTIONAL, "required": CERT_REQUIRED}

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
    :param socket_timeout: per-command limit in seconds (``None`` = no limit).
    :param socket_connect_timeout: limit for connecting plus the handshake, in seconds.
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
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = 5.0
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

    @property
    def address(self) -> str:
        """``host:port``, or the unix socket path: how errors name the server."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"

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


def _coerce(name: str, value: str) -> Any:
    """Convert one URL query value to the type of the field it sets."""
    if name in ("socket_timeout", "socket_connect_timeout"):
        return None if value.lower() in ("", "none") else float(value)
    if name in ("port", "db", "protocol", "max_connections"):
        return int(value)
    if name in ("ssl", "ssl_check_hostname"):
        return value.lower() in ("1", "true", "yes", "on")
    # host, path, user, password and the ssl_* file names stay strings (parse_url unquoted them).
    return value


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
    parsed = _parse_url(url)
    connection_class = parsed.pop("connection_class", None)
    settings: dict[str, Any] = {}
    if connection_class is SSLConnection:
        settings["ssl"] = True
    elif connection_class is UnixDomainSocketConnection:
        settings["path"] = parsed.pop("path")
    for name, value in parsed.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown option {name!r} in Redis URL")
        settings[name] = _coerce(name, value) if isinstance(value, str) else value
    settings.update(kwargs)
    return RedisConfig(**settings)
