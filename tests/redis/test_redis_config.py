"""URL/keyword parsing and backoff: pure functions, no server."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from servers import TLSFiles

from streaq._redis import Backoff, parse_config
from streaq._redis._connection import parse_version


def test_url_with_everything() -> None:
    config = parse_config(
        "rediss://alice:p%40ss@example.com:6380/3?socket_timeout=2.5&protocol=2&client_name=w1"
    )
    assert (config.host, config.port, config.db, config.ssl) == ("example.com", 6380, 3, True)
    assert (config.username, config.password) == ("alice", "p@ss")
    assert (config.socket_timeout, config.protocol, config.client_name) == (2.5, 2, "w1")
    assert config.address == "example.com:6380"


def test_defaults_and_keyword_overrides() -> None:
    config = parse_config("redis://localhost", db=2, socket_timeout=None, max_connections=8)
    assert (config.port, config.db, config.protocol, config.ssl) == (6379, 2, 3, False)
    assert (config.socket_timeout, config.socket_connect_timeout) == (None, 5.0)
    assert config.max_connections == 8


def test_unix_socket_url() -> None:
    config = parse_config("unix:///tmp/redis.sock?db=4")
    assert (config.path, config.db, config.address) == ("/tmp/redis.sock", 4, "/tmp/redis.sock")


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(TypeError, match="colour"):
        parse_config("redis://localhost", colour="blue")
    with pytest.raises(ValueError, match="colour"):
        parse_config("redis://localhost?colour=blue")
    with pytest.raises(ValueError, match="protocol"):
        parse_config("redis://localhost", protocol=4)


def test_ssl_context(tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path)
    config = parse_config(
        "rediss://localhost",
        ssl_ca_certs=tls.ca_file,
        ssl_certfile=tls.client_cert_file,
        ssl_keyfile=tls.client_key_file,
    )
    context = config.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    relaxed = parse_config("rediss://localhost", ssl_cert_reqs="none").ssl_context()
    assert (relaxed.verify_mode, relaxed.check_hostname) == (ssl.CERT_NONE, False)


def test_parse_version() -> None:
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("7.2.0-rc1") == (7, 2, 0)
    assert parse_version("255.255.255") == (255, 255, 255)
    assert parse_version("8") == (8, 0, 0)


def test_backoff_grows_caps_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=0.5, factor=2.0, jitter=0.0)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_backoff_jitter_stays_in_bounds() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.1)
    delays = [backoff.next() for _ in range(200)]
    assert all(0.9 <= delay <= 1.1 for delay in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    "kwargs", [{"initial": -1}, {"initial": 2, "maximum": 1}, {"factor": 0.5}, {"jitter": 2}]
)
def test_backoff_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        Backoff(**kwargs)
