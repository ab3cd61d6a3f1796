"""Worker processes SIGKILLed at random moments under a mixed workload: nothing is lost.

Three ``streaq run app:worker`` processes serve a throwaway Redis while a producer enqueues waves
of plain, delayed, retried, chained and fallback tasks; every 0.3-1.0 s (seeded) one process is
SIGKILLed and a new one started. Afterwards every task has exactly one result (awaited, and
announced exactly once on the ``done`` channel), nothing is queued, indexed or pending, every
task ran at least as often as it should and the extra runs (duplicates) are bounded by what the
kills can interrupt, and only result keys with a TTL remain.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest
import redis
from servers import ServerFactory

from streaq.task import Task

from .app import App, build, record_prefix
from .conftest import ProcessFactory, queue_leftovers

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(150)]

SEED = 20240607
KILL_SECONDS = 25.0
WAVES = 15
PROCESSES = 3
CONCURRENCY = 8
IDLE_TIMEOUT = 1.0


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class DoneListener:
    """Counts the ids announced on the queue's ``done`` channel (a thread, sync redis-py)."""

    def __init__(self, port: int, queue: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._client = redis.Redis(port=port)
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(f"streaq:{{{queue}}}:done")
        self._pubsub.get_message(timeout=5)  # the subscription confirmation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "message":
                continue
            for item in msgspec.msgpack.decode(message["data"]):
                task_id = item[0]
                self.counts[task_id.decode() if isinstance(task_id, bytes) else task_id] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._client.close()


class Workload:
    """The tasks enqueued, what each should end with, and how often each should run."""

    def __init__(self, app: App, rng: random.Random) -> None:
        self.app = app
        self.rng = rng
        self.tasks: list[Task[Any, Any]] = []
        #: task id -> (success, value) expected
        self.expected: dict[str, tuple[bool, Any]] = {}
        #: task id -> the executions it needs when nothing goes wrong
        self.ideal: dict[str, int] = {}
        self._n = 0

    def _add(self, task: Task[Any, Any], success: bool, value: Any, runs: int) -> None:
        self.tasks.append(task)
        self.expected[task.id] = (success, value)
        self.ideal[task.id] = runs

    async def wave(self) -> None:
        app, rng = self.app, self.rng
        batch: list[tuple[Task[Any, Any], int, int]] = []
        for _ in range(120):
            self._n += 1
            batch.append((app.plain.enqueue(self._n, rng.uniform(0, 0.05)), self._n, 1))
        for _ in range(20):
            self._n += 1
            delay = timedelta(seconds=rng.uniform(0.1, 3))
            batch.append((app.plain.enqueue(self._n, 0.01).start(delay=delay), self._n, 1))
        for _ in range(20):
            self._n += 1
            batch.append((app.retried.enqueue(self._n), self._n, 3))
        await app.worker.enqueue_many([t for t, _, _ in batch])
        for task, value, runs in batch:
            self._add(task, True, value, runs)
        for _ in range(10):
            self._n += 1
            head = app.plain.enqueue(self._n, rng.uniform(0, 0.02))
            middle = head.then(app.step)
            tail = await middle.then(app.step)
            self._add(head, True, self._n, 1)
            self._add(middle, True, self._n + 1, 1)
            self._add(tail, True, self._n + 2, 1)
        for _ in range(5):
            self._n += 1
            doomed = app.failing.enqueue(self._n)
            rescue = await doomed.otherwise(app.fallback)
            self._add(doomed, False, ValueError, 1)
            self._add(rescue, True, -self._n, 1)
        for _ in range(5):
            self._n += 1
            fine = app.plain.enqueue(self._n, 0.01)
            unneeded = await fine.otherwise(app.plain_fallback)
            self._add(fine, True, self._n, 1)
            self._add(unneeded, True, self._n, 0)


async def test_random_sigkills_lose_nothing(
    redis_server: ServerFactory,
    worker_processes: ProcessFactory,
    backend_name: str,
    queue_name: str,
) -> None:
    server = redis_server()
    app = build(server.url, queue_name, backend=backend_name)
    procs = worker_processes(
        server.url, queue_name, idle_timeout=IDLE_TIMEOUT, concurrency=CONCURRENCY
    )
    rng = random.Random(SEED)
    workload = Workload(app, rng)
    kills: list[float] = []
    crashed: list[Any] = []
    listener = DoneListener(server.port, queue_name)
    began = time.monotonic()
    try:
        async with app.worker:
            for _ in range(PROCESSES):
                procs.start()

            async def killer() -> None:
                deadline = time.monotonic() + KILL_SECONDS
                while time.monotonic() < deadline:
                    await anyio.sleep(rng.uniform(0.3, 1.0))
                    victims = procs.alive()
                    crashed.extend(p for p in procs.procs if p.poll() not in (None, -9))
                    for _ in range(PROCESSES - len(victims)):
                        procs.start()  # died by itself: replaced; the test fails below
                    procs.kill(rng.choice(victims))
                    kills.append(time.monotonic())
                    procs.start()

            with anyio.fail_after(KILL_SECONDS + 30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(killer)
                    for _ in range(WAVES):
                        await workload.wave()
                        await anyio.sleep((KILL_SECONDS - 5) / WAVES)
            killing_ended = time.monotonic()
            with anyio.fail_after(60):
                results = {t.id: await t.result(timeout=60) for t in workload.tasks}
            drained = time.monotonic()
            assert await app.worker.queue_size() == 0
            crashed.extend(p for p in procs.procs if p.poll() not in (None, -9))
    finally:
        listener.stop()

    # every task ended as it should, with one result announced exactly once
    wrong: list[str] = []
    for task_id, (success, value) in workload.expected.items():
        res = results[task_id]
        if res.success != success:
            wrong.append(f"{task_id} ({res.fn_name}): success={res.success} {res._result!r}")
        elif success and res.result != value:
            wrong.append(f"{task_id} ({res.fn_name}): {res.result!r} != {value!r}")
        elif not success and not isinstance(res.exception, value):
            wrong.append(f"{task_id} ({res.fn_name}): {res.exception!r}")
    assert wrong == []
    announced = {t: n for t, n in listener.counts.items() if t in workload.expected}
    twice = {t: n for t, n in announced.items() if n != 1}
    assert twice == {}, "tasks whose result was written more than once"
    missing = set(workload.expected) - set(announced)
    assert not missing, f"{len(missing)} results never announced"

    client = redis.Redis(port=server.port)
    try:
        assert client.hlen(f"{app.worker.keys.prefix}t") == 0
        assert queue_leftovers(client, queue_name) == []
        prefix = record_prefix(queue_name)
        runs = {_text(k): int(v) for k, v in client.hgetall(prefix + "runs").items()}
        first = {_text(k): int(v) for k, v in client.hgetall(prefix + "first").items()}
    finally:
        client.close()
    too_few = {t: runs.get(t, 0) for t, n in workload.ideal.items() if runs.get(t, 0) < n}
    assert too_few == {}, "tasks that ran less often than they must"
    duplicates = sum(runs.get(t, 0) - n for t, n in workload.ideal.items())
    recoveries = [
        results[t].finish_time / 1000 - first[t] / 1000
        for t, n in workload.ideal.items()
        if runs.get(t, 0) > n
    ]
    crash_logs = [procs.log_of(p) for p in set(crashed)]
    assert not crash_logs, f"a worker died by itself: {crash_logs[0][-2000:]}"
    print(
        f"\n[durability/{backend_name}] tasks={len(workload.tasks)} kills={len(kills)} "
        f"self-crashes={len(crash_logs)} "
        f"duplicates={duplicates} (bound {len(kills) * CONCURRENCY}) "
        f"max recovery={max(recoveries, default=0.0):.2f}s "
        f"(first start of an interrupted task -> its result) "
        f"drain after kills={drained - killing_ended:.2f}s total={time.monotonic() - began:.1f}s"
    )
    assert duplicates <= len(kills) * CONCURRENCY
