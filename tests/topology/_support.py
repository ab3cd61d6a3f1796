"""The workload of the topology tests: a task that counts its runs and says when it is under way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from streaq import Worker
from streaq.task import AsyncRegisteredTask


@dataclass
class CountedWork:
    """``task(n)`` sleeps, counts its run of ``n`` in ``runs`` and returns ``result(n)``;
    ``warm`` is set once ``warm_after`` different inputs ran (the workload is under way)."""

    task: AsyncRegisteredTask[[int], int]
    runs: dict[int, int] = field(default_factory=dict)
    warm: anyio.Event = field(default_factory=anyio.Event)


def counted_work(
    worker: Worker[Any], *, sleep: float, warm_after: int, result: Callable[[int], int]
) -> CountedWork:
    """Register the counting task ``work`` on ``worker``."""
    runs: dict[int, int] = {}
    warm = anyio.Event()

    @worker.task
    async def work(n: int) -> int:
        await anyio.sleep(sleep)
        runs[n] = runs.get(n, 0) + 1
        if len(runs) >= warm_after:
            warm.set()
        return result(n)

    return CountedWork(work, runs, warm)
