"""The UI in a real browser: headless Chromium (Debian's package) driven by Playwright.

``streaq run`` and ``streaq web`` run as subprocesses against one queue, as an operator would run
them; the test enqueues tasks, then loads every page, aborts a running task by clicking its
button, and replays a dead letter. Screenshots go to the test's tmp dir.

It runs once per test run, not per backend: the UI is served by uvicorn on asyncio whatever
the tests' backend, and the browser is the slow part.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from children import child_env
from servers import free_port

from streaq import TaskStatus, Worker

from ._support import WORKER_MODULE

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        os.environ.get("STREAQ_TEST_BACKEND", "asyncio") != "asyncio",
        reason="browser tests run in the asyncio session only (the UI server is asyncio anyway)",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def spawn(cwd: Path, env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m streaq *args`` with its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streaq", *args], cwd=cwd, env=env, stdout=out, stderr=out
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(tmp_path: Path, redis_url: str, clean_queue: str) -> Iterator[tuple[str, Worker[Any]]]:
    """``streaq run`` and ``streaq web`` on the test's queue; the UI's base URL and a producer."""
    (tmp_path / "ui_worker.py").write_text(WORKER_MODULE)
    env = child_env(REDIS_URL=redis_url, STREAQ_QUEUE=clean_queue)
    port = free_port()
    run = spawn(tmp_path, env, "run", "ui_worker:worker", log=tmp_path / "run.log")
    web = spawn(
        tmp_path, env, "web", "ui_worker:worker", "--port", str(port), log=tmp_path / "web.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert web.poll() is None, (tmp_path / "web.log").read_text()
            try:
                if httpx.get(base + "/workers", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "streaq web did not start"
            time.sleep(0.1)
        producer: Worker[Any] = Worker(
            redis_url=redis_url, queue_name=clean_queue, priorities=["low", "high"]
        )
        yield base, producer
    finally:
        stop(web)
        stop(run)


def enqueue(producer: Worker[Any], *calls: tuple[str, tuple[Any, ...]]) -> list[str]:
    """Enqueue ``fn(*args)`` by name for each call; their ids."""

    async def go() -> list[str]:
        async with producer:
            return [(await producer.enqueue_unsafe(fn, *args)).id for fn, args in calls]

    ids: list[str] = _in_thread(go)
    return ids


def _in_thread(fn: Any) -> Any:
    # Playwright's sync API keeps an asyncio loop marked running in this thread
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn).result()


def status(producer: Worker[Any], task_id: str) -> TaskStatus:
    """The status of ``task_id``."""

    async def go() -> TaskStatus:
        async with producer:
            return await producer.status_by_id(task_id)

    result: TaskStatus = _in_thread(go)
    return result


def test_pages_abort_and_replay_in_chromium(
    served: tuple[str, Worker[Any]], tmp_path: Path
) -> None:
    base, producer = served
    ok, failed, long, poison = enqueue(
        producer,
        ("sleeper", (0.01,)),
        ("boom", ()),
        ("sleeper", (60,)),
        ("no_such_function", ()),  # no worker has it: dead-lettered (where supported)
    )
    deadline = time.monotonic() + 15
    while status(producer, long) != TaskStatus.RUNNING or status(producer, ok) != TaskStatus.DONE:
        assert time.monotonic() < deadline, "the worker did not pick the tasks up"
        time.sleep(0.1)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(10_000)
            # the Content-Security-Policy must block nothing the pages need
            refused: list[str] = []
            page.on(
                "console",
                lambda message: (
                    refused.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )

            page.goto(base + "/")
            sync_api.expect(page.locator("#count-running")).to_have_text("1")
            # the stylesheet applied (the header is a dark flex bar)
            sync_api.expect(page.locator("header")).to_have_css("display", "flex")
            sync_api.expect(page.locator("#throughput rect.ok").first).to_be_attached()
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

            for name in ["scheduled", "queued", "running", "done"]:
                page.goto(f"{base}/tasks/{name}")
                sync_api.expect(page.locator("h1")).to_have_text(f"{name.capitalize()} tasks")
                page.screenshot(path=str(tmp_path / f"tasks-{name}.png"), full_page=True)
            page.goto(base + "/tasks/running")
            page.click(f"a:has-text('{long}')")  # the list links to the task's page
            sync_api.expect(page.locator("#status")).to_have_text("running")

            page.goto(f"{base}/task/{failed}")
            sync_api.expect(page.locator("#traceback")).to_contain_text(
                'raise ValueError("kaboom")'
            )
            page.screenshot(path=str(tmp_path / "task-failed.png"), full_page=True)

            page.goto(base + "/cron")
            sync_api.expect(page.locator("#cron")).to_contain_text("*/5 * * * *")
            page.goto(base + "/workers")
            sync_api.expect(page.locator("#workers")).to_contain_text("yes")
            page.screenshot(path=str(tmp_path / "workers.png"), full_page=True)

            # abort the running task with its button, and see the page change
            page.goto(f"{base}/task/{long}")
            page.click("#abort")
            sync_api.expect(page.locator("#message")).to_have_text("aborted")
            sync_api.expect(page.locator("#status")).to_contain_text("done (failed)")
            sync_api.expect(page.locator("#traceback")).to_contain_text("StreaqCancelled")
            page.screenshot(path=str(tmp_path / "task-aborted.png"), full_page=True)
            assert status(producer, long) == TaskStatus.DONE

            page.goto(base + "/dead-letters")
            if page.locator("#unavailable").count():
                page.screenshot(path=str(tmp_path / "dead-letters.png"), full_page=True)
            else:
                for _ in range(50):  # the worker dead-letters it on its first read
                    if page.locator(f"#dead-letters:has-text('{poison}')").count():
                        break
                    time.sleep(0.1)
                    page.reload()
                row = page.locator("#dead-letters tr", has_text=poison).first
                row.locator("button:has-text('Replay')").click()
                sync_api.expect(page.locator("#message")).to_have_text(f"replayed {poison}")
                page.screenshot(path=str(tmp_path / "dead-letters.png"), full_page=True)
            assert not refused, refused
        finally:
            browser.close()
    for name in ["overview", "task-aborted", "dead-letters"]:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


APP_MODULE = '''
"""An application of its own mounting the UI under /streaq (written into the test's tmp dir)."""
from contextlib import asynccontextmanager

from fastapi import FastAPI

from streaq.ui import create_router
from ui_worker import worker


@asynccontextmanager
async def lifespan(app):
    async with worker:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(create_router(worker, scan_limit=None), prefix="/streaq")
'''


@pytest.fixture
def mounted_ui(
    tmp_path: Path, redis_url: str, clean_queue: str
) -> Iterator[tuple[str, Worker[Any], int]]:
    """``streaq run``, and uvicorn serving an app that mounts the UI under ``/streaq``; the UI's
    base URL, a producer and the worker process's pid."""
    (tmp_path / "ui_worker.py").write_text(WORKER_MODULE)
    (tmp_path / "ui_app.py").write_text(APP_MODULE)
    env = child_env(REDIS_URL=redis_url, STREAQ_QUEUE=clean_queue)
    port = free_port()
    run = spawn(tmp_path, env, "run", "ui_worker:worker", log=tmp_path / "run.log")
    with (tmp_path / "web.log").open("wb") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "ui_app:app", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}/streaq"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert web.poll() is None, (tmp_path / "web.log").read_text()
            try:
                if httpx.get(base + "/workers", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)
        producer: Worker[Any] = Worker(
            redis_url=redis_url, queue_name=clean_queue, priorities=["low", "high"]
        )
        yield base, producer, run.pid
    finally:
        stop(web)
        stop(run)


def aborted(producer: Worker[Any], task_id: str) -> None:
    """Abort ``task_id`` from the producer."""

    async def go() -> None:
        async with producer:
            assert await producer.abort_by_id(task_id)

    _in_thread(go)


def delayed(producer: Worker[Any], seconds: float) -> str:
    """Enqueue ``sleeper(seconds)`` due in an hour; its id."""

    async def go() -> str:
        async with producer:
            task = await producer.enqueue_unsafe("sleeper", seconds).start(delay=3600)
            return task.id

    task_id: str = _in_thread(go)
    return task_id


def test_failed_tasks_dead_letters_workers_search_and_live_refresh_under_a_prefix(
    mounted_ui: tuple[str, Worker[Any], int], tmp_path: Path
) -> None:
    base, producer, worker_pid = mounted_ui
    failed, poison = enqueue(producer, ("boom", ()), ("no_such_function", ()))
    later = delayed(producer, 5)
    deadline = time.monotonic() + 15
    while status(producer, failed) != TaskStatus.DONE:
        assert time.monotonic() < deadline, "the worker did not run the task"
        time.sleep(0.1)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(10_000)
            refused: list[str] = []
            page.on(
                "console",
                lambda message: (
                    refused.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )

            # the overview's chart has axes with labels; the script is allowed by the CSP
            page.goto(base + "/queue")
            sync_api.expect(page.locator("#throughput #x-axis")).to_be_attached()
            sync_api.expect(page.locator("#throughput #y-axis")).to_be_attached()
            sync_api.expect(page.locator("#throughput text.x").first).to_have_text(
                re.compile(r"^\d\d:\d\d$")
            )
            sync_api.expect(page.locator("#throughput")).to_contain_text("tasks/min")
            sync_api.expect(page.locator("body")).to_have_attribute("data-live", "on")
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

            # live refresh: a task enqueued now shows without a reload...
            sync_api.expect(page.locator("#count-scheduled")).to_have_text("1")
            delayed(producer, 1)
            sync_api.expect(page.locator("#count-scheduled")).to_have_text("2")
            # ...until paused: time passes (ticks), nothing is fetched
            page.click("#live-toggle")
            sync_api.expect(page.locator("body")).to_have_attribute("data-live", "paused")
            fetched = page.locator("body").get_attribute("data-refreshes")
            ticks = int(page.locator("body").get_attribute("data-ticks") or "0")
            delayed(producer, 2)
            # two ticks of the timer (the CSP forbids wait_for_function's eval): it only counts up
            for seen in (ticks, ticks + 1):
                sync_api.expect(page.locator("body")).not_to_have_attribute("data-ticks", str(seen))
            assert page.locator("body").get_attribute("data-refreshes") == fetched
            sync_api.expect(page.locator("#count-scheduled")).to_have_text("2")
            page.click("#live-toggle")  # resumed: it catches up
            sync_api.expect(page.locator("#count-scheduled")).to_have_text("3")

            # search by id, through relative links under the prefix
            page.fill("#search input[name=task_id]", failed)
            page.click("#search button")
            sync_api.expect(page).to_have_url(f"{base}/task/{failed}")
            sync_api.expect(page.locator("#status")).to_have_text("done (failed)")

            # the failed list, the kept arguments, retry
            page.goto(base + "/tasks/failed")
            sync_api.expect(page.locator("h1")).to_have_text("Failed tasks")
            page.click(f"#tasks a:has-text('{failed}')")
            sync_api.expect(page.locator("#args")).to_contain_text("args = []")
            first_finish = page.locator("#finished").inner_text()
            page.click("#retry")
            sync_api.expect(page.locator("#message")).to_have_text("retried: queued again")
            # it ran (and failed) again: the live page shows the new finish
            sync_api.expect(page.locator("#finished")).not_to_have_text(first_finish)
            sync_api.expect(page.locator("#status")).to_have_text("done (failed)")
            page.screenshot(path=str(tmp_path / "task-retried.png"), full_page=True)
            page.click("#delete")
            sync_api.expect(page.locator("#message")).to_have_text(f"deleted {failed}")
            sync_api.expect(page).to_have_url(re.compile(r"/streaq/tasks/failed\?msg="))

            # an unfinished task's page follows the task's events (server-sent events): aborted
            # elsewhere, it refreshes at once, on the event (data-events counts them: its
            # enqueued event, a moment older than the page, then the abort)
            watched = delayed(producer, 7)
            page.goto(f"{base}/task/{watched}")
            sync_api.expect(page.locator("#task-events")).to_be_attached()
            sync_api.expect(page.locator("body")).to_have_attribute("data-events", "1")
            sync_api.expect(page.locator("#status")).to_have_text("scheduled")
            aborted(producer, watched)
            sync_api.expect(page.locator("body")).to_have_attribute("data-events", "2")
            sync_api.expect(page.locator("#status")).to_have_text("done (failed)")

            # a delayed task that does not repeat has no Unschedule; aborted, it never ran
            page.goto(f"{base}/task/{later}")
            sync_api.expect(page.locator("#abort")).to_be_visible()
            assert page.locator("#unschedule").count() == 0
            page.click("#abort")
            sync_api.expect(page.locator("#message")).to_have_text("aborted")
            sync_api.expect(page.locator("#started")).to_have_text("never")
            sync_api.expect(page.locator("#facts")).not_to_contain_text("ran ")
            sync_api.expect(page.locator("#args")).to_contain_text("args = [5]")

            # the done list, newest first
            page.goto(base + "/tasks/done")
            first_row = page.locator("#tasks tr").nth(1)
            sync_api.expect(first_row).to_contain_text(later)

            # workers: host, pid, backend, concurrency
            page.goto(base + "/workers")
            row = page.locator("#workers tr").nth(1)
            sync_api.expect(row).to_contain_text(socket.gethostname())
            sync_api.expect(row).to_contain_text(str(worker_pid))
            sync_api.expect(row).to_contain_text("asyncio")
            page.screenshot(path=str(tmp_path / "workers.png"), full_page=True)

            # dead letters as a table, purged with a click
            page.goto(base + "/dead-letters")
            sync_api.expect(page.locator("#dead-letters")).to_contain_text(poison)
            sync_api.expect(page.locator("#dead-letters")).to_contain_text("unknown function")
            row = page.locator("#dead-letters tr", has_text=poison).first
            row.locator("button:has-text('Purge')").click()
            sync_api.expect(page.locator("#message")).to_have_text(
                f"purged 1 dead letter(s) of {poison}"
            )
            sync_api.expect(page.locator("#empty")).to_be_visible()
            page.screenshot(path=str(tmp_path / "dead-letters.png"), full_page=True)
            assert not refused, refused
        finally:
            browser.close()
