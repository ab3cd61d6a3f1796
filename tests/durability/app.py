"""The worker of the durability suite, run by ``streaq run app:worker`` in subprocesses.

Configured from the environment (``STREAQ_DUR_*``, see :func:`from_env`); the test process builds
the same worker with :func:`build` to enqueue and await. Every task body records each execution
in Redis under ``dur:{<queue>}:`` (outside the queue's own keys): ``execs`` (a list with one
``"<task id> <pid> <worker id>"`` entry per execution started), ``first`` (task id -> ms of the
first start) and ``attempts`` (task id -> attempts of a retried task). Recording is skipped when
``record`` is off (the ACL test, whose user may only touch the queue's keys).

Right after recording its start a body passes the ``mid_run`` crash point, so a process started
with ``STREAQ_CRASHPOINTS`` may die there (see ``streaq._runtime._crashpoints``). With ``cron`` on,
the worker also fires the cron job ``tick`` every second; without it ``tick`` is a plain task of
the same name, so a worker that does not fire it still runs the firings already queued.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from redis import exceptions as rex

from streaq import Worker
from streaq._runtime._crashpoints import ARMED, crashpoint
from streaq.task import AsyncRegisteredTask
from streaq.types import StreaqRetry

RETRY_ATTEMPTS = 3
#: the concurrency limit of ``limited`` and the rate limit of ``rated``
LIMITED = 3
RATE = "20/s"
#: the cron job fired every second when ``cron`` is on
CRON_NAME = "tick"
CRON_TAB = "* * * * * * *"


def record_prefix(queue: str) -> str:
    """The prefix of the keys the task bodies write (not the queue's keys)."""
    return f"dur:{{{queue}}}:"


@dataclass
class App:
    """A worker and its registered tasks."""

    worker: Worker[Any]
    plain: AsyncRegisteredTask[[int, float], int]
    retried: AsyncRegisteredTask[[int], int]
    step: AsyncRegisteredTask[[int], int]
    failing: AsyncRegisteredTask[[int], int]
    fallback: AsyncRegisteredTask[[int], int]
    plain_fallback: AsyncRegisteredTask[[int, float], int]
    limited: AsyncRegisteredTask[[int, float], int]
    rated: AsyncRegisteredTask[[int], int]
    tenant: AsyncRegisteredTask[[str, int], int]
    total: AsyncRegisteredTask[[list[int]], int]


def build(
    redis_url: str,
    queue: str,
    *,
    backend: str = "asyncio",
    idle_timeout: float = 1.0,
    concurrency: int = 8,
    record: bool = True,
    redis_kwargs: dict[str, Any] | None = None,
    cron: bool = False,
    grace_period: float = 0.0,
) -> App:
    """The suite's worker with its tasks registered."""
    worker: Worker[Any] = Worker(
        redis_url=redis_url,
        queue_name=queue,
        concurrency=concurrency,
        idle_timeout=timedelta(seconds=idle_timeout),
        grace_period=timedelta(seconds=grace_period),
        anyio_backend=backend,
        redis_kwargs=redis_kwargs,
    )
    prefix = record_prefix(queue)

    async def execute(*args: Any) -> Any:
        # Redis may be restarting under the fault tests: a body waits for it rather than fail
        with anyio.fail_after(60):
            while True:
                try:
                    return await worker._client.redis.execute(*args)
                except (rex.ConnectionError, rex.TimeoutError, OSError):
                    await anyio.sleep(0.1)

    async def started(task_id: str) -> None:
        if record:
            entry = f"{task_id} {os.getpid()} {worker.id}"
            await execute("RPUSH", prefix + "execs", entry)
            await execute("HSETNX", prefix + "first", task_id, int(time.time() * 1000))
        if ARMED:
            crashpoint("mid_run")

    @worker.task(name="plain", max_tries=20)
    async def plain(n: int, pause: float) -> int:
        await started(plain.context.task_id)
        await anyio.sleep(pause)
        return n

    @worker.task(name="retried", max_tries=20)
    async def retried(n: int) -> int:
        task_id = retried.context.task_id
        await started(task_id)
        if record:
            attempts = int(await execute("HINCRBY", prefix + "attempts", task_id, 1))
        else:
            attempts = retried.context.tries
        if attempts < RETRY_ATTEMPTS:
            raise StreaqRetry(delay=timedelta(milliseconds=50))
        return n

    @worker.task(name="step", max_tries=20)
    async def step(x: int) -> int:
        await started(step.context.task_id)
        return x + 1

    @worker.task(name="failing", max_tries=20)
    async def failing(n: int) -> int:
        await started(failing.context.task_id)
        raise ValueError(f"failing {n}")

    @worker.task(name="fallback", max_tries=20)
    async def fallback(n: int) -> int:
        await started(fallback.context.task_id)
        return -n

    @worker.task(name="plain_fallback", max_tries=20)
    async def plain_fallback(n: int, pause: float) -> int:
        await started(plain_fallback.context.task_id)
        return -n

    async def span(name: str, pause: float, begin: float | None = None) -> None:
        """Record when a flow-controlled task ran (``<name> <start ms> <end ms>``)."""
        begin = time.time() if begin is None else begin
        await anyio.sleep(pause)
        if record:
            entry = f"{name} {begin * 1000:.3f} {time.time() * 1000:.3f}"
            await execute("RPUSH", prefix + "spans", entry)

    @worker.task(name="limited", max_tries=20, concurrency_limit=LIMITED)
    async def limited(n: int, pause: float) -> int:
        await started(limited.context.task_id)
        await span("limited", pause)
        return n

    @worker.task(name="rated", max_tries=20, rate_limit=RATE)
    async def rated(n: int) -> int:
        # the body's first moment is its start: the round trip of started() is not part of it
        begin = time.time()
        await started(rated.context.task_id)
        await span("rated", 0, begin)
        return n

    @worker.task(name="tenant", max_tries=20, group_by=lambda key, n: key, concurrency_limit=4)
    async def tenant(key: str, n: int) -> int:
        await started(tenant.context.task_id)
        await span(f"tenant:{key}", 0.01)
        return n

    @worker.task(name="total", max_tries=20)
    async def total(values: list[int]) -> int:
        await started(total.context.task_id)
        return sum(values)

    async def tick() -> None:
        await started(tick_task.context.task_id)

    register: Callable[[Callable[[], Coroutine[Any, Any, None]]], Any]
    if cron:
        # not unique: a firing must run even while one interrupted by a kill awaits reclaiming
        register = worker.cron(CRON_TAB, name=CRON_NAME, max_tries=20, unique=False)
    else:
        # the same job: it runs the firings a cron-enabled worker queued
        register = worker.task(name=CRON_NAME, max_tries=20)
    tick_task: AsyncRegisteredTask[[], None] = register(tick)

    return App(
        worker,
        plain,
        retried,
        step,
        failing,
        fallback,
        plain_fallback,
        limited,
        rated,
        tenant,
        total,
    )


def from_env() -> App:
    """The app as configured by the ``STREAQ_DUR_*`` variables the tests set."""
    env = os.environ
    kwargs: dict[str, Any] = {}
    if env.get("STREAQ_DUR_CA"):
        kwargs["ssl_ca_certs"] = env["STREAQ_DUR_CA"]
    return build(
        env["STREAQ_DUR_URL"],
        env["STREAQ_DUR_QUEUE"],
        backend=env.get("STREAQ_DUR_BACKEND", "asyncio"),
        idle_timeout=float(env.get("STREAQ_DUR_IDLE", "1")),
        concurrency=int(env.get("STREAQ_DUR_CONCURRENCY", "8")),
        record=env.get("STREAQ_DUR_RECORD", "1") == "1",
        redis_kwargs=kwargs or None,
        cron=env.get("STREAQ_DUR_CRON", "0") == "1",
        grace_period=float(env.get("STREAQ_DUR_GRACE", "0")),
    )


_app: App | None = None


def __getattr__(name: str) -> Any:
    # ``streaq run app:worker`` looks the worker up; build it only then (the tests import build)
    global _app
    if name == "worker":
        if _app is None:
            _app = from_env()
        return _app.worker
    raise AttributeError(name)
