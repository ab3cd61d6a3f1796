"""Cron jobs fire once per occurrence across workers, with deterministic ids."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq import StreaqError, Worker

from ._support import RunWorker, WorkerFactory

pytestmark = pytest.mark.anyio


async def test_two_workers_fire_each_occurrence_once(
    worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    runs: list[str] = []
    enough = anyio.Event()
    workers = [worker_factory(), worker_factory()]
    ticks: list[Any] = []
    for w in workers:

        async def tick() -> None:
            runs.append(ticks[0].context.task_id)  # any task's `context` reads the running one
            if len(runs) >= 3:
                enough.set()

        ticks.append(w.cron("* * * * * * *", name="tick")(tick))
    async with run_worker(workers[0]), run_worker(workers[1]):
        with anyio.fail_after(10):
            await enough.wait()
    assert len(runs) == len(set(runs)), f"an occurrence ran twice: {runs}"
    assert all(task_id.startswith("cron:tick:") for task_id in runs)


def test_invalid_crontab_is_rejected_at_decoration(worker: Worker[Any]) -> None:
    with pytest.raises(StreaqError, match="invalid crontab"):

        @worker.cron("61 * * * *")
        async def never() -> None: ...
