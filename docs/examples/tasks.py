"""Tasks: options, retries, timeouts, and failures that come back as data."""

from __future__ import annotations

import os
from datetime import timedelta

import anyio

from streaq import StreaqRetry, Worker
from streaq.types import RemoteTaskError

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


# --8<-- [start:options]
@worker.task(
    timeout=timedelta(seconds=1),  # each try is cancelled after one second
    ttl=timedelta(hours=1),  # keep the result for an hour
    max_tries=5,  # deliveries allowed, crash recoveries included
    name="reports.build",  # registered name (default: the function's __qualname__)
)
async def build_report(pages: int) -> str:
    await anyio.sleep(0.01 * pages)
    return f"{pages} pages"


# --8<-- [end:options]


# --8<-- [start:retry]
@worker.task(max_tries=3)
async def flaky_fetch(url: str) -> str:
    tries = flaky_fetch.context.tries  # 1 on the first try
    if tries < 3:
        # ask for another try in 0.1 s (the default delay is tries² seconds)
        raise StreaqRetry("upstream not ready", delay=0.1)
    return f"{url} fetched on try {tries}"


# --8<-- [end:retry]


# --8<-- [start:failures]
@worker.task(timeout=1)
async def too_slow() -> None:
    await anyio.sleep(30)


class PaymentDeclined(Exception):
    pass


@worker.task
async def charge(amount: int) -> str:
    if amount <= 0:
        raise ValueError("amount must be positive")
    raise PaymentDeclined("card expired")


# --8<-- [end:failures]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        report = await build_report.enqueue(3)
        assert (await report.result(timeout=10)).result == "3 pages"

        # --8<-- [start:retry-result]
        fetched = await (await flaky_fetch.enqueue("https://example.com")).result(timeout=10)
        assert fetched.success
        assert fetched.result == "https://example.com fetched on try 3"
        assert fetched.tries == 3
        # --8<-- [end:retry-result]

        # --8<-- [start:failures-result]
        timed_out = await (await too_slow.enqueue()).result(timeout=10)
        assert not timed_out.success
        assert isinstance(timed_out.exception, TimeoutError)

        invalid = await (await charge.enqueue(0)).result(timeout=10)
        assert isinstance(invalid.exception, ValueError)  # builtin types come back as themselves

        declined = await (await charge.enqueue(10)).result(timeout=10)
        error = declined.exception
        assert isinstance(error, RemoteTaskError)  # other types are never imported
        assert error.type_name.endswith("PaymentDeclined")
        assert error.message == "card expired"
        assert "raise PaymentDeclined" in error.remote_traceback
        # --8<-- [end:failures-result]

        # --8<-- [start:status]
        slow = await too_slow.enqueue()
        info = await slow.info()  # None once the task has finished
        assert info is not None
        assert info.fn_name == "too_slow"
        assert await slow.abort(timeout=5)  # cancels it, queued or running
        aborted = await slow.result(timeout=5)
        assert not aborted.success
        # --8<-- [end:status]

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
