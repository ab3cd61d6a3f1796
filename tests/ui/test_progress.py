"""The task page shows the latest progress a task reported, while it runs and after it ended."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaq import TaskStatus, Worker

from .test_http import serving, wait_until

pytestmark = pytest.mark.anyio


async def test_the_task_page_shows_progress(redis_url: str, clean_queue: str) -> None:
    worker: Worker[Any] = Worker(
        redis_url=redis_url, queue_name=clean_queue, idle_timeout=5, handle_signals=False
    )
    go_on = anyio.Event()

    @worker.task(name="crunch")
    async def crunch() -> None:
        await crunch.context.progress({"done": 1, "of": 2})
        await go_on.wait()
        await crunch.context.progress({"done": 2, "of": 2})

    with anyio.fail_after(20):
        async with serving(worker) as client:
            task = await crunch.enqueue()

            async def reported() -> bool:
                return await task.progress() is not None

            await wait_until(reported)
            assert await task.status() == TaskStatus.RUNNING
            page = await client.get(f"/task/{task.id}")
            assert '<code id="progress">{&#39;done&#39;: 1, &#39;of&#39;: 2}</code>' in page.text
            go_on.set()
            await task.result(10)
            page = await client.get(f"/task/{task.id}")
            assert '<code id="progress">{&#39;done&#39;: 2, &#39;of&#39;: 2}</code>' in page.text
            quiet = await worker.enqueue_unsafe("crunch-not")
            await quiet.result(10)  # dead-lettered: never reported
            page = await client.get(f"/task/{quiet.id}")
            assert 'id="progress"' not in page.text
