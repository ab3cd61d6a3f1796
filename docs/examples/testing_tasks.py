"""Testing your tasks: a worker in the test's event loop, on a virtual clock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from streaq import StreaqRetry, Worker
from streaq.testing import VirtualClock, open_harness
from streaq.utils import now_ms

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

# --8<-- [start:tasks]
worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)
reports: list[datetime] = []


@worker.task
async def send_reminder(text: str) -> str:
    return f"sent: {text}"


@worker.task
async def charge(amount: int) -> str:
    if charge.context.tries < 3:
        raise StreaqRetry("the payment gateway is busy", delay=timedelta(minutes=5))
    return f"charged {amount}"


@worker.cron("0 9 * * *")  # every day at 09:00 UTC
async def daily_report() -> None:
    # now_ms() follows the virtual clock; datetime.now() would read the wall clock
    reports.append(datetime.fromtimestamp(now_ms() / 1000, UTC))


# --8<-- [end:tasks]

# a fixed start keeps the 09:00 cron job out of the other tests' hours
NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# --8<-- [start:delay]
async def test_the_reminder_goes_an_hour_later() -> None:
    async with open_harness(worker, clock=VirtualClock(NOON)) as harness:
        task = await send_reminder.enqueue("stand-up").start(delay=timedelta(hours=1))
        assert (await harness.drain()).completed == 0  # not due yet
        harness.advance(timedelta(hours=1))
        assert (await harness.drain()).completed == 1
        result = await task.result(timeout=1)
    assert result.result == "sent: stand-up"


# --8<-- [end:delay]


# --8<-- [start:retry]
async def test_a_charge_is_tried_again_after_five_minutes() -> None:
    async with open_harness(worker, clock=VirtualClock(NOON)) as harness:
        task = await charge.enqueue(30)
        assert (await harness.drain()).retried == 1  # first try: busy, again at 12:05
        harness.advance(timedelta(minutes=4))
        assert (await harness.drain()).retried == 0  # 12:04: nothing due
        harness.advance(timedelta(minutes=1))
        assert (await harness.drain()).retried == 1  # second try: busy, again at 12:10
        harness.advance(timedelta(minutes=5))
        assert (await harness.drain()).completed == 1
        result = await task.result(timeout=1)
    assert result.result == "charged 30"
    assert result.tries == 3


# --8<-- [end:retry]


# --8<-- [start:cron]
async def test_the_report_comes_daily_at_nine() -> None:
    clock = VirtualClock(datetime(2030, 1, 1, 8, 0, tzinfo=UTC))
    async with open_harness(worker, clock=clock) as harness:
        harness.advance(timedelta(hours=1))  # 09:00: the report fires
        assert (await harness.drain()).completed == 1
        harness.advance(timedelta(hours=23, minutes=59))  # 08:59 the next day: not yet
        assert (await harness.drain()).completed == 0
        harness.advance(timedelta(minutes=1))
        assert (await harness.drain()).completed == 1
    assert reports == [
        datetime(2030, 1, 1, 9, 0, tzinfo=UTC),
        datetime(2030, 1, 2, 9, 0, tzinfo=UTC),
    ]


# --8<-- [end:cron]


async def main() -> None:
    begun = time.monotonic()
    await test_the_reminder_goes_an_hour_later()
    await test_a_charge_is_tried_again_after_five_minutes()
    await test_the_report_comes_daily_at_nine()
    # a day and more of the queue's time, in moments of real time
    assert time.monotonic() - begun < 10
