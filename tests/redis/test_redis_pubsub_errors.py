"""A subscription the server refuses fails with its error instead of waiting forever."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anyio
import pytest
import redis
from redis import exceptions as rex

from streaq._redis import open_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def user_without_pubsub(redis_url: str) -> Iterator[str]:
    """A URL for an ACL user that may run everything but pub/sub commands."""
    name = f"nopubsub-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@pubsub"],
    )
    try:
        yield redis_url.replace("redis://", f"redis://{name}:pw@", 1)
    finally:
        admin.acl_deluser(name)
        admin.close()


async def test_refused_subscribe_raises(user_without_pubsub: str) -> None:
    async with open_client(user_without_pubsub) as client, client.pubsub() as ps:
        with anyio.fail_after(5), pytest.raises(rex.NoPermissionError):
            await ps.subscribe("some-channel")
        assert ps.channels == frozenset()
