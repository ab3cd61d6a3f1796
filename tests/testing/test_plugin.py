"""The opt-in pytest plugin of ``streaq.testing`` and its throwaway ``redis-server``.

The plugin is exercised as a user meets it: a separate pytest run whose root ``conftest.py``
names it in ``pytest_plugins`` (a plugin must be named before its module is imported, which this
suite's own modules do).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streaq.testing import redis_server

USER_TEST = """
import os
import uuid

import pytest
import redis

from streaq import Worker
from streaq.testing import open_harness

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_a_harness_on_the_fixture(streaq_redis_url):
    expected = os.environ.get("STREAQ_TEST_REDIS_URL")
    assert streaq_redis_url == expected if expected else streaq_redis_url.startswith("redis://")
    worker = Worker(redis_url=streaq_redis_url, queue_name=f"plugin-{uuid.uuid4().hex}")

    @worker.task
    async def double(n: int) -> int:
        return n * 2

    async with open_harness(worker) as harness:
        task = await double.enqueue(21)
        assert (await harness.drain()).completed == 1
        assert (await task.result(timeout=1)).result == 42
    client = redis.Redis.from_url(streaq_redis_url)
    client.delete(*client.keys(worker.prefix + "*"))
    client.close()
"""


def _pytest(folder: Path, redis_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAQ_TEST_REDIS_URL"}
    if redis_url is not None:
        env["STREAQ_TEST_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "anyio", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("source", ["throwaway", "environment"])
def test_the_fixture_serves_a_harness(tmp_path: Path, shared_redis_url: str, source: str) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["streaq.testing"]\n')
    (tmp_path / "test_user.py").write_text(USER_TEST)
    run = _pytest(tmp_path, shared_redis_url if source == "environment" else None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


def test_the_plugin_is_not_loaded_unless_named(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("def test_it(streaq_redis_url):\n    pass\n")
    run = _pytest(tmp_path, None)
    assert run.returncode == 1
    assert "fixture 'streaq_redis_url' not found" in run.stdout


def test_a_throwaway_server_is_gone_after_its_block() -> None:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_a_missing_server_command_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="not on PATH"), redis_server("no-such-redis"):
        pass
