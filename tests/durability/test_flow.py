"""Flow control across three worker processes: the limits hold fleet-wide, measured from when the
task bodies ran (``app.py`` records a span per run)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import redis
from servers import ServerFactory

from .app import LIMITED, App, build, record_prefix
from .conftest import ProcessFactory, queue_leftovers

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]

PROCESSES = 3


def _spans(port: int, queue: str) -> list[tuple[str, float, float]]:
    client = redis.Redis(port=port)
    try:
        raw: list[bytes] = client.lrange(record_prefix(queue) + "spans", 0, -1)  # type: ignore[assignment]
    finally:
        client.close()
    spans = []
    for entry in raw:
        name, begin, end = entry.decode().split(" ")
        spans.append((name, float(begin) / 1000, float(end) / 1000))
    return spans


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def _max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered if start <= t < start + window) for start in ordered)


@pytest.fixture
def fleet(
    redis_server: ServerFactory,
    worker_processes: ProcessFactory,
    backend_name: str,
    queue_name: str,
) -> tuple[App, int]:
    server = redis_server()
    procs = worker_processes(server.url, queue_name, concurrency=8)
    for _ in range(PROCESSES):
        procs.start()
    return build(server.url, queue_name, backend=backend_name), server.port


async def _first_span(port: int, queue: str) -> None:
    while True:
        if _spans(port, queue):
            return
        await anyio.sleep(0.05)


async def _drain(app: App, tasks: list[Any], timeout: float) -> float:
    began = time.monotonic()
    with anyio.fail_after(timeout):
        await app.worker.enqueue_many(tasks)
        for task in tasks:
            assert (await task.result()).success
    return time.monotonic() - began


async def test_limits_hold_across_processes(fleet: tuple[App, int], queue_name: str) -> None:
    app, port = fleet
    async with app.worker:
        # a 20/s task over 200 enqueues: never more than 20 starts in any second, ~10 s in all
        took = await _drain(app, [app.rated.enqueue(n) for n in range(200)], 60)
        # concurrency_limit=3: never more than 3 running, whichever process runs them
        await _drain(app, [app.limited.enqueue(n, 0.05) for n in range(60)], 60)
        # two tenants, 500 tasks and 5: the small one is done within the first few claims
        big = [app.tenant.enqueue("big", n) for n in range(500)]
        small = [app.tenant.enqueue("small", n) for n in range(5)]
        await app.worker.enqueue_many(big)
        await _drain(app, small, 60)
        for task in big:
            await task.result(timeout=60)
    spans = _spans(port, queue_name)
    rated = [begin for name, begin, _ in spans if name == "rated"]
    assert len(rated) == 200
    assert _max_in_window(rated, 1.0) <= 20
    assert 9.0 <= took <= 30.0  # 180 starts past the first 20 need 9 s at 20/s
    limited = [(b, e) for name, b, e in spans if name == "limited"]
    assert len(limited) == 60
    assert _max_overlap(limited) <= LIMITED
    tenants = [name for name, _, _ in sorted(spans, key=lambda s: s[1]) if name.startswith("t")]
    last_small = max(i for i, name in enumerate(tenants) if name == "tenant:small")
    assert last_small < 30, f"the small tenant's last task started {last_small}th"
    client = redis.Redis(port=port)
    try:
        assert queue_leftovers(client, queue_name) == []
    finally:
        client.close()


async def test_pause_stops_new_starts_within_100_ms(
    fleet: tuple[App, int], queue_name: str
) -> None:
    app, port = fleet
    async with app.worker:
        tasks = [app.limited.enqueue(n, 0.02) for n in range(400)]
        await app.worker.enqueue_many(tasks)
        with anyio.fail_after(30):
            await _first_span(port, queue_name)
        paused_at = time.time()
        await app.worker.pause(app.limited)
        await anyio.sleep(1.0)
        frozen = len(_spans(port, queue_name))
        await anyio.sleep(0.5)
        assert len(_spans(port, queue_name)) == frozen
        resumed_at = time.time()
        await app.worker.resume(app.limited)
        with anyio.fail_after(60):
            for task in tasks:
                assert (await task.result()).success
    starts = [begin for _, begin, _ in _spans(port, queue_name)]
    assert not [t for t in starts if paused_at + 0.1 < t < resumed_at]
    assert len(starts) == 400
