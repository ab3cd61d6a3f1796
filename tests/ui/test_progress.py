"""The task page shows the latest progress a task reported (while it runs and after it ended),
and follows the task's events as server-sent events."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import anyio
import httpx
import pytest

from streaq import TaskStatus, Worker
from streaq.ui import create_app

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


class _Exchange:
    """One request to an ASGI app, its answer seen as it streams (httpx's ASGI transport hands
    over a response only once its body is complete)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.started = anyio.Event()
        self.done = anyio.Event()

    async def run(self, app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"ui.test"), *headers],
            "server": ("ui.test", 80),
            "client": ("127.0.0.1", 50000),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError  # never reached

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = dict(message["headers"])
                self.started.set()
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")
                if not message.get("more_body", False):
                    self.done.set()

        await app(scope, receive, send)


async def test_the_task_page_follows_the_task_events(redis_url: str, clean_queue: str) -> None:
    worker: Worker[Any] = Worker(
        redis_url=redis_url, queue_name=clean_queue, idle_timeout=5, handle_signals=False
    )
    go_on = anyio.Event()

    @worker.task(name="step")
    async def step() -> None:
        await go_on.wait()
        await step.context.progress(1)

    app = create_app(worker)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            async with app.router.lifespan_context(app):
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://ui.test"
                )
                task = await step.enqueue()
                started = None
                async with aclosing(task.events()) as events:
                    async for event in events:
                        if event.kind == "started":
                            started = event
                            break
                assert started is not None
                page = await client.get(f"/task/{task.id}")
                assert f'data-events="./{task.id}/events?since=' in page.text
                # a browser resuming after the started event gets the rest, up to the final one
                exchange = _Exchange()
                resume = [(b"last-event-id", started.id.encode())]
                tg.start_soon(exchange.run, app, f"/task/{task.id}/events", resume)
                await exchange.started.wait()
                assert exchange.headers[b"content-type"].startswith(b"text/event-stream")
                go_on.set()
                await exchange.done.wait()
                frames = exchange.body.decode().strip().split("\n\n")
                assert [f.split("\n")[1] for f in frames] == ["event: progress", "event: finished"]
                assert frames[0].startswith("id: ")
                # an ended task: 204, which tells a browser not to reconnect; no stream on its page
                assert (await client.get(f"/task/{task.id}/events")).status_code == 204
                page = await client.get(f"/task/{task.id}")
                assert "data-events" not in page.text
                other = await step.enqueue()
                bad = await client.get(f"/task/{other.id}/events", headers={"Last-Event-ID": "x"})
                assert bad.status_code == 400
                await other.abort()
                await client.aclose()
            tg.cancel_scope.cancel()
