"""Groups: fan out many tasks, fan their results in to one task."""

from __future__ import annotations

import os

import anyio

from streaq import Worker
from streaq.task import TaskResult

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


# --8<-- [start:tasks]
@worker.task
async def fetch(url: str) -> int:
    if url.startswith("bad"):
        raise ValueError(f"cannot fetch {url}")
    return len(url) * 100


@worker.task
async def total(sizes: list[int], unit: str = "bytes") -> str:
    return f"{sum(sizes)} {unit}"


@worker.task
async def report(results: list[TaskResult[int]]) -> list[str]:
    return [str(r.result) if r.success else "failed" for r in results]


@worker.task
async def no_sizes(reason: str) -> list[int]:
    return []


# --8<-- [end:tasks]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        # --8<-- [start:group]
        urls = ["a.io", "example.com", "b.org"]
        # the members run in parallel; the group's results come in member order
        group = await worker.enqueue_group([fetch.enqueue(url) for url in urls])
        results = await group.result(timeout=10)
        assert [r.result for r in results] == [400, 1100, 500]
        # --8<-- [end:group]

        # --8<-- [start:then]
        # the collector runs once, after every member succeeded, with their values
        summed = await worker.group([fetch.enqueue(url) for url in urls]).then(total, unit="B")
        assert (await summed.result(timeout=10)).result == "2000 B"
        # --8<-- [end:then]

        # --8<-- [start:failure]
        broken = worker.group([fetch.enqueue(url) for url in ("a.io", "bad.io")])
        never = broken.then(total)
        rescued = broken.otherwise(no_sizes, "a fetch failed")
        await worker.enqueue_many([never, rescued])
        outcome = await never.result(timeout=10)
        assert not outcome.success  # the collector did not run; the error names the member
        assert f"member {broken.tasks[1].id} of group {broken.id} failed" in str(outcome.exception)
        assert (await rescued.result(timeout=10)).result == []

        # `then_settled` runs whatever the members' outcomes, with every result
        settled = await worker.group([fetch.enqueue(u) for u in ("a.io", "bad.io")]).then_settled(
            report
        )
        assert (await settled.result(timeout=10)).result == ["400", "failed"]
        # --8<-- [end:failure]

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
