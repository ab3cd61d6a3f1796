"""Secrets are never printed: Redis passwords (in URLs, keyword arguments, ``sentinel_kwargs``) and
the ``signing_secret`` stay out of every ``repr``, log line, error message and CLI failure, and
where a URL is shown its password reads ``***``.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import AuthenticationError, ConnectionError, RedisError
from servers import ServerFactory

from streaq import RedisPool, Worker
from streaq._redis import mask_url, parse_config

from ._support import free_port, streaq_command

SECRET = "s3cret-Pw"
SIGNING = "sign1ng-Key"
GOOD = "g00d-Pw"  # the right password of the throwaway server's user
HIDDEN = (SECRET, SIGNING, GOOD)


def assert_hidden(text: str) -> None:
    for secret in HIDDEN:
        assert secret not in text, text


def described(exc: BaseException) -> str:
    """Everything an exception tells: str, repr, and the whole traceback with its causes."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://user:{SECRET}@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
        (f"redis://:{SECRET}@h", "redis://:***@h"),
        (f"rediss://u:{SECRET}@h:1?password={SECRET}&db=2", "rediss://u:***@h:1?password=***&db=2"),
        (
            f"redis://h?socket_timeout=3&PASSWORD={SECRET}",
            "redis://h?socket_timeout=3&PASSWORD=***",
        ),
        (f"unix://u:{SECRET}@/tmp/redis.sock?db=1", "unix://u:***@/tmp/redis.sock?db=1"),
        ("redis://u:p@ss/w:rd@h:1/0", "redis://u:***@h:1/0"),  # '@' and '/' in the password
        ("redis://user@h", "redis://user@h"),
        ("redis://h:6379", "redis://h:6379"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_reprs_show_no_secret() -> None:
    url = f"redis://alice:{SECRET}@127.0.0.1:6379/0?password={SECRET}"
    config = parse_config(url)
    assert config.password == SECRET  # kept, for AUTH
    assert "password=***" in repr(config)
    assert_hidden(repr(config) + str(config))
    assert "password=None" in repr(parse_config("redis://h"))

    pool = RedisPool(url, password=SECRET, sentinel_kwargs={"password": SECRET})
    worker: Worker[Any] = Worker(
        redis_url=url,
        redis_kwargs={"password": SECRET},
        sentinel_kwargs={"password": SECRET},
        signing_secret=[SIGNING, "old-" + SIGNING],
        queue_name="secrets",
    )
    shown = [repr(pool), str(pool), pool.describe(), repr(worker), str(worker)]
    shown += [repr(worker.redis_pool), repr(worker.codec), str(worker.codec)]
    for text in shown:
        assert_hidden(text)
    assert "redis://alice:***@127.0.0.1:6379/0?password=***" in repr(pool)
    assert "redis://alice:***@" in worker.redis_pool.describe()
    for topology in [
        RedisPool(password=SECRET, sentinel_nodes=[("10.0.0.1", 26379)]),
        RedisPool(password=SECRET, cluster_nodes=[("10.0.0.1", 7000)]),
    ]:
        assert_hidden(repr(topology))


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}/0",  # the '@' is missing: the password reads as the port
        f"redis://user:{SECRET}@h:{SECRET}/0",
        f"redis://user:{SECRET}@[::1/0",
        f"http://user:{SECRET}@h",
    ],
)
def test_malformed_urls_are_refused_without_echoing_them(url: str) -> None:
    for build in (parse_config, RedisPool, lambda url: Worker(redis_url=url)):
        with pytest.raises(ValueError, match="Redis URL") as caught:
            build(url)
        assert_hidden(described(caught.value))


@pytest.mark.anyio
async def test_connection_errors_show_no_secret(redis_server: ServerFactory) -> None:
    closed = free_port()
    server = redis_server(acl_users=[f"alice on >{GOOD} ~* &* +@all"])
    attempts: list[tuple[RedisPool, type[RedisError]]] = [
        (RedisPool(f"redis://alice:{SECRET}@127.0.0.1:{closed}/0"), ConnectionError),
        (RedisPool(f"redis://alice:{SECRET}@127.0.0.1:{server.port}/0"), AuthenticationError),
        (RedisPool(server.url, username="alice", password=SECRET), AuthenticationError),
        (
            RedisPool(
                sentinel_nodes=[("127.0.0.1", closed)],
                sentinel_kwargs={"password": SECRET},
                password=SECRET,
            ),
            ConnectionError,
        ),
        (RedisPool(cluster_nodes=[("127.0.0.1", closed)], password=SECRET), ConnectionError),
    ]
    with anyio.fail_after(30):
        for pool, expected in attempts:
            with pytest.raises(expected) as caught:
                async with pool:
                    pass
            assert_hidden(described(caught.value))


@pytest.mark.anyio
async def test_worker_logs_show_no_secret(
    redis_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server(acl_users=[f"alice on >{GOOD} ~* &* +@all"])
    url = f"redis://alice:{GOOD}@127.0.0.1:{server.port}/0"
    worker: Worker[Any] = Worker(
        redis_url=url, signing_secret=SIGNING, queue_name="secrets", handle_signals=False
    )

    @worker.task
    async def echo(text: str) -> str:
        return text

    @worker.task
    async def boom() -> None:
        raise ValueError("kaboom")

    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            assert (await (await echo.enqueue("hi")).result()).result == "hi"
            assert not (await (await boom.enqueue()).result()).success
            tg.cancel_scope.cancel()
    assert f"established connection to redis://alice:***@127.0.0.1:{server.port}/0" in caplog.text
    assert "kaboom" in caplog.text  # the failure was logged
    assert_hidden(caplog.text)
    for record in caplog.records:
        if record.exc_info and record.exc_info[1] is not None:
            assert_hidden(described(record.exc_info[1]))


MODULE = """
from streaq import Worker

worker = Worker(redis_url={url!r}, signing_secret={signing!r}, queue_name="secrets")
"""


@pytest.mark.parametrize("where", ["closed port", "wrong password"])
def test_cli_failures_show_no_secret(
    tmp_path: Path, redis_server: ServerFactory, where: str
) -> None:
    if where == "closed port":
        url = f"redis://user:{SECRET}@127.0.0.1:{free_port()}"
    else:
        server = redis_server(acl_users=[f"alice on >{GOOD} ~* &* +@all"])
        url = f"redis://alice:{SECRET}@127.0.0.1:{server.port}"
    (tmp_path / "app.py").write_text(MODULE.format(url=url, signing=SIGNING))
    shown = mask_url(url)
    assert "***" in shown
    for command in [
        ["info", "app:worker"],
        ["web", "app:worker", "--port", str(free_port())],
        ["run", "app:worker", "--burst"],
        ["run", "app:worker", "--burst", "--verbose"],
        ["dlq", "list", "app:worker"],
        ["functions", "list", "app:worker"],
    ]:
        done = streaq_command(tmp_path, *command)
        assert done.returncode == 1, (command, done.stderr)
        assert_hidden(done.stdout + done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("streaq: error: "), (command, done.stderr)
        assert f"(connecting to {shown})" in last, (command, last)
        # the traceback is what --verbose asks for; the secret stays hidden in it too
        assert ("Traceback" in done.stderr) == ("--verbose" in command), (command, done.stderr)
