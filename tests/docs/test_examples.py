"""Every example of the documentation runs against the real Redis, on asyncio and trio.

Each ``docs/examples/*.py`` has an ``async def main() -> None`` that runs a worker and asserts
what the page says happens; a failing assertion here means the docs are wrong.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import redis

from ._support import example_names, load_example, main_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def clean_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    """The test's queue; its keys, and those of queues named after it, are deleted afterwards."""
    yield queue_name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_every_example_is_tested() -> None:
    assert example_names(), "docs/examples holds no example"


#: examples that start worker processes (``streaq run``)
SLOW = {"deployment"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=[pytest.mark.slow] * (name in SLOW)) for name in example_names()],
)
async def test_example(
    name: str, redis_url: str, clean_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_example(name, monkeypatch, redis_url, clean_queue)
    with anyio.fail_after(45):
        await main_of(module)()
