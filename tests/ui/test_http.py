"""The UI over HTTP (httpx's ASGI transport) against a live worker running in a task group.

The app runs on the test's backend: FastAPI and Starlette are anyio code, so the pages and
actions are exercised on trio too (``streaq web`` itself serves them with uvicorn on asyncio).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from streaq import TaskStatus, Worker
from streaq.ui import create_app, router
from streaq.ui.deps import get_exception_formatter, get_result_formatter, get_worker

pytestmark = pytest.mark.anyio

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_worker(redis_url: str, queue_name: str) -> Worker[Any]:
    """A worker with two priorities, a sleeper, a failing task and a cron job."""
    worker: Worker[Any] = Worker(
        redis_url=redis_url,
        queue_name=queue_name,
        priorities=["low", "high"],
        idle_timeout=5,
        handle_signals=False,
    )

    @worker.task(name="sleeper")
    async def sleeper(seconds: float) -> float:
        await anyio.sleep(seconds)
        return seconds

    @worker.task(name="boom")
    async def boom() -> None:
        raise ValueError("kaboom")

    @worker.cron("*/5 * * * *", name="tick")
    async def tick() -> None:
        pass

    return worker


@asynccontextmanager
async def serving(
    worker: Worker[Any], *, run: bool = True, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The UI app (its lifespan entered) behind an httpx client, the worker running if ``run``."""
    app = create_app(worker, **options)
    async with anyio.create_task_group() as tg:
        if run:
            await tg.start(worker.run_async)
        # httpx's ASGI transport does not run the lifespan: enter it here, as a server would
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ui.test"
            ) as client,
        ):
            yield client
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` until it holds (the caller bounds the wait)."""
    while True:
        if await predicate():
            return
        await anyio.sleep(0.02)


async def csrf_token(client: httpx.AsyncClient) -> str:
    """The form token of the client's session (any page issues it)."""
    page = await client.get("/queue")
    found = TOKEN.search(page.text) or TOKEN.search((await client.get("/tasks/queued")).text)
    if found is None:
        # a page without forms still sets the cookie; its token is the part before the dot
        return client.cookies["streaq_csrf"].split(".")[0]
    return found.group(1)


async def test_every_page_renders_real_data(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper, boom = worker.registry["sleeper"], worker.registry["boom"]
    with anyio.fail_after(30):
        # the whole shared database is scanned: the done counts are exact whatever its size
        async with serving(worker, scan_limit=None) as client:
            ok = await sleeper.enqueue(0.01)
            failed = await boom.enqueue()
            long = await sleeper.enqueue(30)
            child = await sleeper.enqueue(0.0).start(after=long.id)
            later = await sleeper.enqueue(1).start(delay=3600, priority="high")
            await ok.result(10)
            await failed.result(10)

            async def long_runs() -> bool:
                return await long.status() == TaskStatus.RUNNING

            await wait_until(long_runs)

            overview = await client.get("/queue")
            assert overview.status_code == 200
            assert f"Queue {clean_queue}" in overview.text
            assert '<b id="count-running">1</b>' in overview.text
            assert '<b id="count-scheduled">2</b>' in overview.text
            assert '<b id="count-done">2</b>' in overview.text
            assert '<b id="count-workers">1</b>' in overview.text
            assert "<svg" in overview.text
            assert "2 finished" in overview.text  # both results are in the chart's last minute
            assert "tick" in overview.text

            running = await client.get("/tasks/running")
            assert long.id in running.text
            assert ok.id not in running.text
            scheduled = await client.get("/tasks/scheduled")
            assert child.id in scheduled.text
            assert later.id in scheduled.text
            high = await client.get("/tasks/scheduled", params={"priority": "high"})
            assert later.id in high.text
            assert child.id not in high.text
            done = await client.get("/tasks/done")
            assert ok.id in done.text
            assert failed.id in done.text
            assert "succeeded" in done.text
            assert "failed" in done.text

            page = await client.get(f"/task/{ok.id}")
            assert '<pre id="result">0.01</pre>' in page.text
            page = await client.get(f"/task/{failed.id}")
            assert "ValueError(&#39;kaboom&#39;)" in page.text
            assert "raise ValueError(&#34;kaboom&#34;)" in page.text  # the worker's traceback
            page = await client.get(f"/task/{child.id}")
            assert "scheduled" in page.text
            assert f'href="./{long.id}"' in page.text  # its dependency, relative
            page = await client.get(f"/task/{long.id}")
            assert f'href="./{child.id}"' in page.text  # its dependent
            assert "args = [30]" in page.text
            assert (await client.get("/task/no-such-task")).status_code == 404

            cron = await client.get("/cron")
            assert "tick" in cron.text
            assert "cron:tick:" in cron.text
            workers = await client.get("/workers")
            assert worker.id in workers.text
            assert "1 alive of 1 seen" in workers.text
            letters = await client.get("/dead-letters")
            assert letters.status_code == 200
            css = await client.get("/style.css")
            assert css.headers["content-type"].startswith("text/css")


async def test_lists_page_without_hidden_caps(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        # no worker runs: delayed tasks stay put while the pages are read
        async with serving(worker, run=False) as client:
            ids = set()
            for n in range(7):
                task = await sleeper.enqueue(n).start(
                    delay=3600, priority="low" if n % 2 else "high"
                )
                ids.add(task.id)
            seen: list[str] = []
            offset = 0
            while True:
                page = await client.get("/tasks/scheduled", params={"limit": 3, "offset": offset})
                assert page.status_code == 200
                found = [i for i in ids if i in page.text]
                assert len(found) <= 3
                seen += found
                if 'id="next"' not in page.text:
                    break
                offset += 3
            assert sorted(seen) == sorted(ids)  # every task once, over three pages
            assert offset == 6
            big = await client.get("/tasks/scheduled", params={"limit": 500})  # the most
            assert all(i in big.text for i in ids)
            low = await client.get("/tasks/scheduled", params={"priority": "low"})
            assert sum(i in low.text for i in ids) == 3
            assert (
                await client.get("/tasks/scheduled", params={"priority": "x"})
            ).status_code == 400
            assert (await client.get("/tasks/nope")).status_code == 404
            assert (await client.get("/tasks/queued", params={"limit": 0})).status_code == 422


async def test_csrf_rejects_missing_or_wrong_tokens(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            task = await sleeper.enqueue(1)
            token = await csrf_token(client)
            url = f"/task/{task.id}/abort"
            assert (await client.post(url)).status_code == 403
            assert (await client.post(url, data={"csrf_token": "wrong"})).status_code == 403
            # the right token without the signed cookie (a cross-site form cannot send it)
            cookies = dict(client.cookies)
            client.cookies.clear()
            assert (await client.post(url, data={"csrf_token": token})).status_code == 403
            # a forged cookie (token of the attacker's choosing, bad signature)
            client.cookies.set("streaq_csrf", "evil.0000")
            assert (await client.post(url, data={"csrf_token": "evil"})).status_code == 403
            client.cookies.clear()
            client.cookies.update(cookies)
            assert await task.status() == TaskStatus.QUEUED  # nothing happened
            # another session's token does not fit this session's cookie
            async with httpx.AsyncClient(
                transport=client._transport, base_url="http://ui.test"
            ) as other:
                other_token = await csrf_token(other)
            assert other_token != token
            assert (await client.post(url, data={"csrf_token": other_token})).status_code == 403
            assert await task.status() == TaskStatus.QUEUED


async def test_abort_via_post_changes_the_status(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker) as client:
            task = await sleeper.enqueue(30)

            async def runs() -> bool:
                return await task.status() == TaskStatus.RUNNING

            await wait_until(runs)
            page = await client.get(f"/task/{task.id}")
            assert '<span id="status" class="status status-running">running</span>' in page.text
            token = TOKEN.search(page.text)
            assert token is not None
            answer = await client.post(
                f"/task/{task.id}/abort", data={"csrf_token": token.group(1)}
            )
            assert answer.status_code == 303
            # the location is relative to the action's URL, as a browser reads it
            after = await client.get(answer.request.url.join(answer.headers["location"]))
            assert 'id="message">aborted<' in after.text
            assert "done (failed)" in after.text
            assert "StreaqCancelled" in after.text
            assert await task.status() == TaskStatus.DONE


async def test_unschedule_a_repeating_task(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker) as client:
            repeating = await sleeper.enqueue(0).start(schedule="0 0 1 1 *")
            finished = await sleeper.enqueue(0)
            await finished.result(10)
            token = await csrf_token(client)
            answer = await client.post(
                f"/task/{repeating.id}/unschedule",
                data={"csrf_token": token},
                follow_redirects=True,
            )
            assert 'id="message">unscheduled<' in answer.text
            assert await repeating.status() != TaskStatus.SCHEDULED
            answer = await client.post(
                f"/task/{finished.id}/unschedule",
                data={"csrf_token": token},
                follow_redirects=True,
            )
            assert "not unscheduled" in answer.text


async def test_dead_letter_replay(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker) as client:
            # a function no worker registered: its message is dead-lettered at once
            poison = await worker.enqueue_unsafe("no_such_function", 1)

            async def dead() -> bool:
                return poison.id in (await client.get("/dead-letters")).text

            await wait_until(dead)
            page = await client.get("/dead-letters")
            assert "no_such_function" in page.text
            token = TOKEN.search(page.text)
            assert token is not None
            answer = await client.post(
                f"/dead-letters/{poison.id}/replay",
                data={"csrf_token": token.group(1)},
                follow_redirects=True,
            )
            assert answer.status_code == 200
            assert f"replayed {poison.id}" in answer.text


async def test_auth_dependency_guards_every_route(redis_url: str, clean_queue: str) -> None:
    def only_with_key(request: Request) -> None:
        if request.headers.get("x-key") != "let-me-in":
            raise HTTPException(401, "no key")

    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker, run=False, auth=only_with_key) as client:
            for path in ["/", "/queue", "/tasks/queued", "/cron", "/workers", "/dead-letters"]:
                assert (await client.get(path)).status_code == 401, path
            assert (await client.post("/task/x/abort")).status_code == 401
            assert (await client.get("/task/x")).status_code == 401
            assert (await client.get("/queue", headers={"x-key": "let-me-in"})).status_code == 200


async def test_root_redirects_to_the_overview(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            root = await client.get("/")
            assert root.status_code == 303  # as streaq 7.2's UI
            assert root.headers["location"] == "./queue"  # relative, as every link
            overview = await client.get("/", follow_redirects=True)
            assert overview.status_code == 200
            assert f"Queue {clean_queue}" in overview.text


@asynccontextmanager
async def mounted_the_72_way(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of ``app``, its lifespan entered as a server would."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        yield client


async def test_router_mounted_the_72_way(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper, boom = worker.registry["sleeper"], worker.registry["boom"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with worker:
            yield

    # streaq 7.2's documented setup: the module's router, the worker through get_worker
    app = FastAPI(lifespan=lifespan)
    app.dependency_overrides[get_worker] = lambda: worker
    app.dependency_overrides[get_result_formatter] = lambda: lambda value: f"value is {value}"
    app.dependency_overrides[get_exception_formatter] = lambda: lambda exc: f"failed with {exc}"
    app.include_router(router, prefix="/streaq")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            async with mounted_the_72_way(app) as client:
                done = await sleeper.enqueue(0.01)
                failed = await boom.enqueue()
                await done.result(10)
                await failed.result(10)
                root = await client.get("/streaq/")
                assert root.status_code == 303
                assert root.headers["location"] == "./queue"
                overview = await client.get("/streaq/queue")
                assert overview.status_code == 200
                assert f"Queue {clean_queue}" in overview.text
                assert 'id="count-done"' in overview.text  # exact on a small database only
                page = await client.get(f"/streaq/task/{done.id}")
                assert "value is 0.01" in page.text
                page = await client.get(f"/streaq/task/{failed.id}")
                assert "failed with kaboom" in page.text
                listed = await client.get("/streaq/tasks/done")
                assert listed.status_code == 200
            tg.cancel_scope.cancel()


async def test_router_without_a_worker_says_how_to_set_one() -> None:
    app = FastAPI()
    app.include_router(router)
    with anyio.fail_after(10):
        async with mounted_the_72_way(app) as client:
            answer = await client.get("/queue")
    assert answer.status_code == 412  # as streaq 7.2
    assert "dependency_overrides[get_worker]" in answer.json()["detail"]


async def test_overview_shows_flow_control(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)

    @worker.task(name="metered", group_by=lambda key: key, concurrency_limit=2)
    async def metered(key: str) -> None: ...

    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            await worker.pause(metered)
            await worker.pause()
            await worker.enqueue_many([metered.enqueue(key) for key in ("x", "x", "y")])
            page = (await client.get("/queue")).text
            await worker.resume()
            await worker.resume(metered)
    assert 'id="paused"' in page
    table = page[page.index('id="flows"') :]
    assert "<td>metered</td>" in table
    assert "x: 2, y: 1" in table


async def test_scale_from_the_workers_page(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker) as client:
            page = await client.get("/workers")
            assert 'id="scale"' in page.text
            token = TOKEN.search(page.text)
            assert token is not None
            answer = await client.post(
                "/workers/scale", data={"csrf_token": token.group(1), "concurrency": "3"}
            )
            assert answer.status_code == 303
            after = await client.get(answer.headers["location"])
            assert "runs 3 at once now" in after.text

            async def scaled() -> bool:
                return worker.concurrency == 3

            # the running worker hears the command on its channel
            await wait_until(scaled)
            for bad in ("0", "x", "10001"):
                refused = await client.post(
                    "/workers/scale", data={"csrf_token": token.group(1), "concurrency": bad}
                )
                assert "must be a number" in (await client.get(refused.headers["location"])).text
            assert worker.concurrency == 3
            forged = await client.post("/workers/scale", data={"concurrency": "1"})
            assert forged.status_code == 403
