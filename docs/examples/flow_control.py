"""Flow control: concurrency and rate limits across the fleet, fair groups, pause, back-off,
dedup keys on enqueue and a worker's concurrency changed while it runs."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import anyio

from streaq import Worker
from streaq.types import Dedup, DedupOutcome, StreaqRateLimited

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, concurrency=16)
running = [0, 0]  # now, most at once
sent: list[float] = []
crawled: list[str] = []


# --8<-- [start:limits]
@worker.task(concurrency_limit=2)  # at most 2 at once, whichever workers run them
async def resize(image: str) -> str:
    running[0] += 1
    running[1] = max(running)
    await anyio.sleep(0.05)
    running[0] -= 1
    return image.upper()


@worker.task(rate_limit="5/s")  # at most 5 starts in any second (also "10/m", "3/10s")
async def send_sms(number: str) -> None:
    sent.append(time.monotonic())


@worker.task(  # one tenant's backlog never starves the others
    group_by=lambda tenant, url: tenant,
    group_concurrency=1,
)
async def crawl(tenant: str, url: str) -> None:
    crawled.append(tenant)
    await anyio.sleep(0.01)


# --8<-- [end:limits]

calls = [0]


# --8<-- [start:backoff]
@worker.task(concurrency_limit=4)
async def call_partner(order: int) -> int:
    calls[0] += 1
    if calls[0] == 1:  # the partner's API answered 429 Too Many Requests
        raise StreaqRateLimited(0.2)  # this task and the others of it wait 0.2 s; no try lost
    return order


# --8<-- [end:backoff]


indexed: list[str] = []


@worker.task()
async def reindex(doc: str, version: int) -> int:
    indexed.append(f"{doc}@{version}")
    return version


async def dedup_examples() -> None:
    # --8<-- [start:dedup]
    # throttle: while the key's task is live (or for 1 minute after it was enqueued), another
    # enqueue of the key is dropped; its handle names the task that holds the key
    first = await reindex.enqueue("a", 1).start(dedup_key="a", dedup=Dedup.throttle(60))
    again = await reindex.enqueue("a", 2).start(dedup_key="a", dedup=Dedup.throttle(60))
    assert again.dedup_outcome is DedupOutcome.DROPPED
    assert again.id == first.id
    assert (await again.result()).result == 1

    # debounce: each enqueue replaces the key's task that has not started and pushes the
    # start out by the window: edits in a burst run once, with the last arguments
    settle = Dedup.debounce(timedelta(milliseconds=200))
    edits = [await reindex.enqueue("b", v).start(dedup_key="b", dedup=settle) for v in range(5)]
    assert (await edits[-1].result()).result == 4
    assert not (await edits[0].result()).success  # superseded: StreaqCancelled

    # keep last: while the key's task runs, one follow-up waits, with the latest arguments
    latest = await reindex.enqueue("c", 1).start(dedup_key="c", dedup=Dedup.keep_last())
    assert latest.dedup_outcome is DedupOutcome.ENQUEUED
    # --8<-- [end:dedup]
    await latest.result()
    assert indexed.count("b@4") == 1
    assert "b@0" not in indexed


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(30):
            resized = [resize.enqueue(f"img{n}") for n in range(6)]
            await worker.enqueue_many(resized)
            for image in resized:
                await image.result()
            assert running[1] == 2

            texts = [send_sms.enqueue(f"+3361234567{n}") for n in range(10)]
            await worker.enqueue_many(texts)
            for text in texts:
                await text.result()
            assert max(sent) - min(sent) >= 1.0  # 10 starts at 5/s span at least a second

            pages = [crawl.enqueue("big", f"/{n}") for n in range(20)]
            pages += [crawl.enqueue("small", f"/{n}") for n in range(2)]
            await worker.enqueue_many(pages)
            for page in pages:
                await page.result()
            assert crawled.index("small") <= 1  # round-robin: "small" ran among the first

            # --8<-- [start:pause]
            await worker.pause(resize)  # or worker.pause() for the whole queue
            later = await resize.enqueue("img9")
            assert await later.status() == "queued"  # waits; nothing of resize starts
            await worker.resume(resize)
            assert (await later.result()).result == "IMG9"
            # --8<-- [end:pause]

            assert (await (await call_partner.enqueue(7)).result()).result == 7
            assert calls[0] == 2

            await dedup_examples()

            # --8<-- [start:scale]
            worker.set_concurrency(4)  # this process's running worker, at once
            assert worker.running() <= worker.concurrency == 4
            await worker.scale(8)  # every running worker of the queue (streaq scale, the UI)
            # --8<-- [end:scale]
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
