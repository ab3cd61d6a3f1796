"""Scheduling: delays, moments, repeating crontab tasks and cron jobs, in a time zone."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio

from streaq import StreaqError, TaskStatus, Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

# --8<-- [start:worker]
worker: Worker[None] = Worker(
    redis_url=REDIS_URL,
    queue_name=QUEUE,
    tz=ZoneInfo("Europe/Paris"),  # crontabs (and log timestamps) read in Paris time
)
# --8<-- [end:worker]

ticks: list[datetime] = []
beats: list[datetime] = []


@worker.task
async def remind(text: str) -> str:
    return f"reminder: {text}"


@worker.task
async def tick() -> None:
    ticks.append(datetime.now(UTC))


# --8<-- [start:cron]
@worker.cron("* * * * * * *")  # 7 fields: seconds first, year last -> every second
async def heartbeat() -> None:
    beats.append(datetime.now(UTC))


@worker.cron("30 9 * * mon-fri")  # 5 fields: 09:30 Paris time on weekdays
async def morning_digest() -> None: ...


@worker.cron("0 0 1 1 * 2030")  # 6 fields: the 5 above plus a year
async def new_decade() -> None: ...


@worker.cron("@hourly", max_schedule_drift=timedelta(minutes=5))  # aliases work too
def hourly_cleanup() -> None: ...  # a sync cron job runs in a thread


# --8<-- [end:cron]


def invalid_crontab_is_rejected() -> None:
    # --8<-- [start:invalid]
    try:

        @worker.cron("61 * * * *")
        async def never() -> None: ...

    except StreaqError as error:
        print(f"rejected at decoration time: {error}")
    # --8<-- [end:invalid]
    else:
        raise AssertionError("an invalid crontab must be rejected")


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (the tasks run on another worker, in general)
            await anyio.sleep(0.1)


async def main() -> None:
    invalid_crontab_is_rejected()
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        # --8<-- [start:delay]
        later = await remind.enqueue("stand up").start(delay=timedelta(seconds=1))
        assert await later.status() == TaskStatus.SCHEDULED

        at = datetime.now(UTC) + timedelta(seconds=1)
        at_moment = await remind.enqueue("drink water").start(schedule=at)

        assert (await later.result(timeout=10)).result == "reminder: stand up"
        assert (await at_moment.result(timeout=10)).result == "reminder: drink water"
        # --8<-- [end:delay]

        # --8<-- [start:repeat]
        repeating = await tick.enqueue().start(schedule="* * * * * * *")  # every second
        await until(lambda: len(ticks) >= 2)
        assert await repeating.unschedule()  # no more firings
        # --8<-- [end:repeat]

        await until(lambda: len(beats) >= 1)

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
