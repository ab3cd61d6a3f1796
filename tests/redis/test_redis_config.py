"""URL/keyword parsing and backoff: pure functions, no server."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import pytest
from servers import TLSFiles

from streaq._redis import Backoff, RedisConfig, parse_config
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


def test_dead_peer_defaults() -> None:
    config = parse_config("redis://localhost")
    assert (config.socket_timeout, config.socket_connect_timeout) == (30.0, 5.0)
    assert config.socket_keepalive
    keepalive = (
        config.socket_keepalive_idle,
        config.socket_keepalive_interval,
        config.socket_keepalive_count,
    )
    assert keepalive == (10, 5, 3)
    assert (config.health_check_interval, config.health_check_timeout) == (30.0, 5.0)


def test_keepalive_and_health_check_in_url() -> None:
    config = parse_config(
        "redis://localhost?socket_keepalive=false&health_check_interval=5&socket_timeout=none"
        "&socket_keepalive_idle=20&socket_keepalive_interval=2&socket_keepalive_count=9"
    )
    assert config.socket_keepalive is False
    assert config.health_check_interval == 5.0
    assert config.socket_timeout is None
    assert config.health_check_timeout == 5.0  # the connect timeout, the only limit left
    keepalive = (
        config.socket_keepalive_idle,
        config.socket_keepalive_interval,
        config.socket_keepalive_count,
    )
    assert keepalive == (20, 2, 9)
    assert parse_config("redis://h?socket_keepalive=ON&ssl_check_hostname=0").socket_keepalive
    assert parse_config("redis://h", socket_timeout=None, socket_connect_timeout=None) == (
        parse_config("redis://h?socket_timeout=none&socket_connect_timeout=None")
    )
    assert parse_config("redis://h?socket_timeout=none").health_check_timeout == 5.0
    both_off = parse_config("redis://h?socket_timeout=none&socket_connect_timeout=none")
    assert both_off.health_check_timeout is None
    assert parse_config("redis://h?socket_timeout=2").health_check_timeout == 2.0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("health_check_interval=abc", "'abc' for 'health_check_interval'.*expected seconds"),
        ("socket_keepalive=maybe", "'maybe' for 'socket_keepalive'.*expected true or false"),
        ("socket_keepalive_idle=1.5", "'1.5' for 'socket_keepalive_idle'.*expected an integer"),
        ("socket_timeout=soon", "'soon' for 'socket_timeout'.*expected seconds or none"),
        ("health_check_interval=-1", "health_check_interval must be >= 0"),
        ("socket_timeout=0", "socket_timeout must be a positive number"),
        ("socket_connect_timeout=nan", "socket_connect_timeout must be a positive number"),
        ("socket_keepalive_count=0", "socket_keepalive_count must be >= 1"),
    ],
)
def test_bad_values_are_clear_errors(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_config(f"redis://localhost?{query}")


def test_every_typed_field_is_read_from_a_url() -> None:
    # a field whose URL reading was forgotten would come back as a string
    for field in dataclasses.fields(RedisConfig):
        default = field.default
        if not isinstance(default, bool | int | float) or field.name == "protocol":
            continue
        text = str(default).lower() if isinstance(default, bool) else str(default)
        value = getattr(parse_config(f"redis://localhost?{field.name}={text}"), field.name)
        assert (type(value), value) == (type(default), default), field.name
    assert parse_config("redis://localhost?protocol=2").protocol == 2


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
