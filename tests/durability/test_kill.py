"""Worker processes SIGKILLed at random moments under a mixed workload: nothing is lost.

Beside a steady process that fires the cron job, three ``streaq run app:worker`` processes serve a
throwaway Redis while a producer enqueues waves of plain, delayed, retried, chained and fallback
tasks, and a cron job fires every second; every 0.3-1.0 s (seeded) one of the three is SIGKILLed
and a new one started. The end checks are :meth:`KillScenario.check`'s: one result per task and
per cron firing, nothing stuck, no leaked key, and no run repeated unless a kill interrupted it.
"""

from __future__ import annotations

import time

import anyio
import pytest
from servers import ServerFactory

from ._support import CONCURRENCY, PROCESSES, KillScenario
from .conftest import ProcessFactory

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(180)]

SEED = 20240607
KILL_SECONDS = 25.0
WAVES = 15


async def test_random_sigkills_lose_nothing(
    redis_server: ServerFactory,
    worker_processes: ProcessFactory,
    backend_name: str,
    queue_name: str,
) -> None:
    scenario = KillScenario(redis_server(), worker_processes, backend_name, queue_name, SEED)
    rng = scenario.rng
    kills: list[float] = []

    async def killer() -> None:
        while True:
            await anyio.sleep(rng.uniform(0.3, 1.0))
            victims = scenario.disruptable()
            for _ in range(PROCESSES - len(victims)):
                scenario.start_worker()  # died by itself: replaced; check() fails the test
            if not victims:
                continue
            scenario.procs.kill(rng.choice(victims))
            kills.append(time.monotonic())
            scenario.start_worker()

    await scenario.run(killer, waves=WAVES, seconds=KILL_SECONDS)
    figures = scenario.check()
    figures.kills = len(kills)
    figures.extra["bound"] = len(kills) * CONCURRENCY
    print(figures.line(f"durability/{backend_name}"))
    # a kill interrupts at most the runs its process had under way
    assert figures.duplicates <= len(kills) * CONCURRENCY
