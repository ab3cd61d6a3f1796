"""TLS end to end, a queue-restricted ACL user, and a wrong password."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import pytest
from redis import exceptions as rex
from servers import ServerFactory

from .app import App, build

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: the smallest ACL found to run a queue end to end (``<queue>`` replaced by the queue's name);
#: see the report of this suite for how it was found
#: (FUNCTION LOAD is in @write; XREADGROUP/XAUTOCLAIM in @write; HELLO/AUTH need no grant)
MINIMAL_ACL = "~streaq:{<queue>}:* &streaq:{<queue>}:* +@read +@write +subscribe +publish +fcall"


@asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    async with anyio.create_task_group() as tg:
        await tg.start(app.worker.run_async)
        try:
            yield app
        finally:
            tg.cancel_scope.cancel()


async def _exercise(app: App) -> None:
    """Plain, delayed, retried, chained and fallback tasks all finish as they should."""
    with anyio.fail_after(30):
        plain = await app.plain.enqueue(1, 0)
        delayed = await app.plain.enqueue(2, 0).start(delay=timedelta(milliseconds=200))
        retried = await app.retried.enqueue(3)
        head = app.plain.enqueue(4, 0)
        chain = await head.then(app.step)
        rescue = await app.failing.enqueue(5).otherwise(app.fallback)
        assert (await plain.result()).result == 1
        assert (await delayed.result()).result == 2
        assert (await retried.result()).result == 3
        assert (await chain.result()).result == 5
        assert (await rescue.result()).result == -5
        blocker = await app.plain.enqueue(6, 60)
        assert await blocker.abort()


async def test_tls_end_to_end(
    redis_server: ServerFactory, backend_name: str, queue_name: str
) -> None:
    server = redis_server(tls=True)
    app = build(
        server.url,
        queue_name,
        backend=backend_name,
        record=False,
        redis_kwargs={"ssl_ca_certs": redis_server.tls_files().ca_file},
    )
    assert server.url.startswith("rediss://")
    async with app.worker, running(app):
        await _exercise(app)


async def test_acl_user_restricted_to_the_queue(
    redis_server: ServerFactory, backend_name: str, queue_name: str
) -> None:
    rule = MINIMAL_ACL.replace("<queue>", queue_name)
    server = redis_server(acl_users=[f"worker on >pw {rule}"], password="admin")
    url = server.url.replace("redis://", "redis://worker:pw@")
    app = build(url, queue_name, backend=backend_name, record=False)
    async with app.worker, running(app):
        await _exercise(app)
        # and nothing outside the queue's keys
        with pytest.raises(rex.NoPermissionError):
            await app.worker._client.redis.execute("GET", "elsewhere")


#: a producer's rule: the worker's, without the FUNCTION command (no FUNCTION LOAD)
PRODUCER_ACL = MINIMAL_ACL.replace("+@write", "+@write -function") + " +fcall_ro"


async def test_producer_without_function_load_rights(
    redis_server: ServerFactory, backend_name: str, queue_name: str
) -> None:
    """A producer's user may not load functions: it only calls those a worker loaded."""
    worker_rule = MINIMAL_ACL.replace("<queue>", queue_name)
    producer_rule = PRODUCER_ACL.replace("<queue>", queue_name)
    server = redis_server(
        acl_users=[f"worker on >pw {worker_rule}", f"producer on >pw {producer_rule}"],
        password="admin",
    )
    app = build(server.url.replace("redis://", "redis://worker:pw@"), queue_name, record=False)
    producer = build(
        server.url.replace("redis://", "redis://producer:pw@"), queue_name, record=False
    )
    async with app.worker, running(app), producer.worker:
        with anyio.fail_after(30):
            task = await producer.plain.enqueue(7, 0)
            assert (await task.result()).result == 7
            assert await producer.worker.queue_size() == 0
        with pytest.raises(rex.NoPermissionError):
            await producer.worker._client.redis.execute("FUNCTION", "LOAD", "#!lua name=x\n")


async def test_wrong_password(redis_server: ServerFactory, queue_name: str) -> None:
    server = redis_server(password="right")
    app = build(server.url.replace("redis://", "redis://:wrong@"), queue_name, record=False)
    with anyio.fail_after(10), pytest.raises(rex.AuthenticationError):
        async with app.worker:
            pass
