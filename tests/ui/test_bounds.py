"""The Redis work of one call, or one page view, is bounded: ``scan_limit`` caps the keys a scan
examines, and the UI passes its :data:`~streaq.ui._app.SCAN_LIMIT` and reuses the overview's
figures for a few seconds.

A throwaway server holds the test's queue among many unrelated keys, so that a whole-database
``SCAN`` would take many steps; ``INFO commandstats`` counts the steps taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from servers import RedisServer, ServerFactory

from streaq import TaskStatus
from streaq.ui._app import SCAN_LIMIT

from .test_http import make_worker, serving

pytestmark = pytest.mark.anyio

FILLER = 60_000  # unrelated keys: a whole-database scan takes FILLER / 500 steps at least
STEP = 500  # the COUNT of one SCAN step


def fill(server: RedisServer) -> redis.Redis:
    """A plain client of ``server``, after writing :data:`FILLER` keys that are not the queue's."""
    client = redis.Redis.from_url(server.url)
    batch = 5_000
    for start in range(0, FILLER, batch):
        client.mset({f"other:{n}": "x" for n in range(start, start + batch)})
    return client


def calls(client: redis.Redis, command: str) -> int:
    """How many times ``command`` ran since the last ``CONFIG RESETSTAT``."""
    stats: dict[str, Any] = client.info("commandstats")
    found: dict[str, Any] = stats.get(f"cmdstat_{command}", {})
    return int(found.get("calls", 0))


@pytest.fixture
def stuffed(redis_server: ServerFactory) -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A throwaway server holding :data:`FILLER` unrelated keys, and a plain client of it."""
    server = redis_server()
    client = fill(server)
    yield server, client
    client.close()


async def test_scan_limit_bounds_the_listings(
    stuffed: tuple[RedisServer, redis.Redis], queue_name: str
) -> None:
    server, client = stuffed
    worker = make_worker(server.url, queue_name)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            done = [await sleeper.enqueue(0) for _ in range(5)]
            for task in done:
                await task.result(10)
            tg.cancel_scope.cancel()
        async with worker:
            client.config_resetstat()
            everything = await worker.finish_times()
            assert len(everything) == 5
            assert calls(client, "scan") >= FILLER // STEP  # the whole database

            client.config_resetstat()
            some, complete = await worker.sample_finish_times(1_000)
            assert len(some) <= 5
            assert complete is False
            assert calls(client, "scan") == 2
            client.config_resetstat()
            listed = await worker.get_tasks_by_status(TaskStatus.DONE, scan_limit=1_200)
            assert len(listed) <= 5
            assert calls(client, "scan") == 3  # 500 + 500 + 200
            for bad in (0, -1):
                with pytest.raises(ValueError, match="scan_limit"):
                    await worker.sample_finish_times(bad)
            all_of_them, complete = await worker.sample_finish_times(10 * FILLER)
            assert complete is True
            assert sorted(all_of_them) == sorted(everything)

            # unfinished tasks: the queue's index, in steps of HSCAN
            later = [sleeper.enqueue(n).start(delay=3600) for n in range(1_500)]
            await worker.enqueue_many(later)
            client.config_resetstat()
            found = await worker.get_tasks_by_status(TaskStatus.SCHEDULED, limit=5_000)
            assert len(found) == 1_500
            assert calls(client, "hscan") >= 3
            client.config_resetstat()
            found = await worker.get_tasks_by_status(
                TaskStatus.SCHEDULED, limit=5_000, scan_limit=STEP
            )
            assert 0 < len(found) < 1_500
            assert calls(client, "hscan") == 1


async def test_a_page_view_scans_a_bounded_part_of_the_database(
    stuffed: tuple[RedisServer, redis.Redis], queue_name: str
) -> None:
    server, client = stuffed
    assert FILLER > 2 * SCAN_LIMIT  # else this test proves nothing
    worker = make_worker(server.url, queue_name)
    sleeper = worker.registry["sleeper"]
    most_steps = SCAN_LIMIT // STEP
    with anyio.fail_after(60):
        async with serving(worker) as client_of_ui:
            for task in [await sleeper.enqueue(0) for _ in range(3)]:
                await task.result(10)
            client.config_resetstat()
            overview = await client_of_ui.get("/queue")
            assert overview.status_code == 200
            assert 0 < calls(client, "scan") <= most_steps
            # the counts say they are partial
            assert re.search(r'<b id="count-done">\d+\+</b>', overview.text)
            assert 'id="partial"' in overview.text
            assert "more than 20,000 keys" in overview.text
            # a second view within a few seconds reuses the figures
            client.config_resetstat()
            assert (await client_of_ui.get("/queue")).status_code == 200
            assert calls(client, "scan") == 0
            client.config_resetstat()
            listed = await client_of_ui.get("/tasks/done", params={"limit": 500})
            assert listed.status_code == 200
            assert 0 < calls(client, "scan") <= most_steps
            assert "first 20,000 keys" in listed.text  # the page says what it looked at


async def test_scan_limit_of_the_ui(
    stuffed: tuple[RedisServer, redis.Redis], queue_name: str, redis_server: ServerFactory
) -> None:
    server, client = stuffed
    worker = make_worker(server.url, queue_name)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(60):
        # no limit: exact figures, at the cost of the whole database per view
        async with serving(worker, scan_limit=None) as client_of_ui:
            for task in [await sleeper.enqueue(0) for _ in range(3)]:
                await task.result(10)
            client.config_resetstat()
            overview = await client_of_ui.get("/queue")
            assert '<b id="count-done">3</b>' in overview.text
            assert 'id="partial"' not in overview.text
            assert calls(client, "scan") >= FILLER // STEP
            done = await client_of_ui.get("/tasks/done")
            assert "keys of the Redis database" not in done.text
        # a small database is scanned whole within the default limit: exact, and said so
        small = make_worker(redis_server().url, queue_name)
        async with serving(small) as client_of_ui:
            for task in [await small.registry["boom"].enqueue() for _ in range(2)]:
                await task.result(10)
            overview = await client_of_ui.get("/queue")
            assert '<b id="count-done">2</b>done' in overview.text
            assert '<b id="count-failed">2</b>failed' in overview.text
            assert 'id="partial"' not in overview.text
