"""The UI's failed-task work, dead-letter purging, worker details, search, relative links, live
refresh script and chart, over HTTP against a live worker (see ``test_http``)."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import anyio
import httpx
import pytest
from fastapi import HTTPException, Request

from streaq import TaskStatus, Worker
from streaq.ui._links import relative

from .test_http import TOKEN, make_worker, serving, wait_until
from .test_security import assert_secured, client_of, mounted

pytestmark = pytest.mark.anyio


def with_flaky(worker: Worker[Any], fails: list[int]) -> Any:
    """Register ``flaky(n, tag=...)``, failing while ``fails`` holds a number."""

    @worker.task(name="flaky")
    async def flaky(n: int, *, tag: str = "") -> int:
        if fails:
            fails.pop()
            raise ValueError(f"flaky {n}")
        return n

    return flaky


async def post(client: httpx.AsyncClient, page: httpx.Response, action: str) -> httpx.Response:
    """Submit the form of ``page`` whose action ends with ``action``, as a browser would: the
    action and the redirect resolved against the page's URL, the session's token sent."""
    token = TOKEN.search(page.text)
    assert token is not None
    found = re.search(rf'action="([^"]*{re.escape(action)})"', page.text)
    assert found is not None, action
    answer = await client.post(page.url.join(found.group(1)), data={"csrf_token": token[1]})
    assert answer.status_code == 303
    assert_secured(answer)
    return await client.get(answer.url.join(answer.headers["location"]))


def test_relative_links() -> None:
    assert relative("/streaq/task/a", "/streaq/tasks/done") == "../tasks/done"
    assert relative("/streaq/task/a", "/streaq/task/b") == "./b"
    assert relative("/task/a/retry", "/task/a") == "../a"
    assert relative("/queue", "/task/cron%3Atick%3A1") == "./task/cron%3Atick%3A1"
    assert relative("/streaq/", "/streaq/queue") == "./queue"
    assert relative("/streaq/queue", "/streaq/") == "./"


async def test_failed_tasks_list_retry_and_delete(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    fails = [1, 1]
    flaky = with_flaky(worker, fails)
    with anyio.fail_after(30):
        async with serving(worker, scan_limit=None) as client:
            ok = await flaky.enqueue(0)  # fails (first number in fails)
            await ok.result(10)
            bad = await flaky.enqueue(7, tag="seven")
            await bad.result(10)  # fails too
            good = await flaky.enqueue(9)
            await good.result(10)
            listed = await client.get("/tasks/failed")
            assert listed.status_code == 200
            assert bad.id in listed.text
            assert ok.id in listed.text
            assert good.id not in listed.text
            # newest first: bad finished after ok
            assert listed.text.index(bad.id) < listed.text.index(ok.id)
            done = await client.get("/tasks/done")
            order = [done.text.index(t.id) for t in (good, bad, ok)]
            assert order == sorted(order)

            page = await client.get(f"/task/{bad.id}")
            assert "args = [7]" in page.text  # kept with the failure
            assert "kwargs = {&#39;tag&#39;: &#39;seven&#39;}" in page.text
            assert 'id="retry"' in page.text
            after = await post(client, page, f"{bad.id}/retry")
            assert 'id="message">retried: queued again<' in after.text
            assert (await bad.result(10)).result == 7  # ran again, under its id

            page = await client.get(f"/task/{ok.id}")
            after = await post(client, page, f"{ok.id}/delete")
            assert f"deleted {ok.id}" in after.text
            assert str(after.url).endswith(f"/tasks/failed?msg=deleted+{ok.id}")
            assert await ok.status() == TaskStatus.NOT_FOUND
            assert (await client.get(f"/task/{ok.id}")).status_code == 404


async def test_retry_and_delete_say_why_they_did_nothing(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            later = await sleeper.enqueue(1).start(delay=3600)
            page = await client.get(f"/task/{later.id}")
            token = TOKEN.search(page.text)
            assert token is not None
            data = {"csrf_token": token[1]}
            retried = await client.post(f"/task/{later.id}/retry", data=data, follow_redirects=True)
            assert "not retried" in retried.text
            assert "cannot be retried" in retried.text
            deleted = await client.post(
                f"/task/{later.id}/delete", data=data, follow_redirects=True
            )
            assert "not deleted" in deleted.text
            assert await later.status() == TaskStatus.SCHEDULED
            # every new action refuses a POST without the session's token
            for action in ["retry", "delete"]:
                assert (await client.post(f"/task/{later.id}/{action}")).status_code == 403
            for path in ["/dead-letters/x/purge", "/dead-letters/purge"]:
                assert (await client.post(path)).status_code == 403
            await later.abort()


async def test_a_task_that_never_ran_shows_no_run_time(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker, run=False, scan_limit=None) as client:
            later = await sleeper.enqueue(2).start(delay=3600)
            assert await later.abort()
            page = await client.get(f"/task/{later.id}")
            assert '<td id="started">never</td>' in page.text
            assert "ran " not in page.text
            assert "args = [2]" in page.text  # an abort keeps the call too
            listed = await client.get("/tasks/failed")
            assert "never started" in listed.text


async def test_unschedule_only_for_repeating_tasks(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            repeating = await sleeper.enqueue(0).start(schedule="0 0 1 1 *")
            once = await sleeper.enqueue(0).start(delay=3600)
            page = await client.get(f"/task/{repeating.id}")
            assert 'id="unschedule"' in page.text
            assert '<code id="crontab">0 0 1 1 *</code>' in page.text
            page = await client.get(f"/task/{once.id}")
            assert 'id="unschedule"' not in page.text
            assert 'id="abort"' in page.text
            await repeating.unschedule()
            await once.abort()


async def test_dead_letters_table_and_purge(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker) as client:
            poisons = [await worker.enqueue_unsafe("no_such_function", n) for n in range(3)]

            async def all_dead() -> bool:
                return len(await worker.dead_letters()) == 3

            await wait_until(all_dead)
            page = await client.get("/dead-letters")
            table = page.text[page.text.index('id="dead-letters"') :]
            assert "<th>reason</th>" in table
            assert "unknown function" in table
            assert f'href="./task/{poisons[0].id}"' in table  # to the failed task's page
            after = await post(client, page, f"{poisons[0].id}/purge")
            assert f"purged 1 dead letter(s) of {poisons[0].id}" in after.text
            assert poisons[0].id not in after.text[after.text.index('id="dead-letters"') :]
            after = await post(client, after, "/purge")
            assert "purged 2 dead letter(s)" in after.text
            assert 'id="empty"' in after.text
            assert await worker.dead_letters() == []


async def test_workers_page_shows_what_workers_report(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with serving(worker) as client:
            long = await sleeper.enqueue(30)

            async def listed() -> bool:
                return long.id in (await client.get("/workers")).text

            await wait_until(listed)
            page = (await client.get("/workers")).text
            row = page[page.index(f"<code>{worker.id}</code>") :]
            assert f"<td>{socket.gethostname()}</td>" in row
            assert f'<td class="num">{os.getpid()}</td>' in row
            assert "<td>asyncio" in row or "<td>trio</td>" in row
            assert '<td class="num">16</td>' in row  # concurrency
            assert f'href="./task/{long.id}"' in row
            await long.abort()


async def test_search_goes_to_the_task(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker, run=False) as client:
            found = await client.get("/search", params={"task_id": " cron:tick:1 "})
            assert found.status_code == 303
            assert found.headers["location"] == "./task/cron%3Atick%3A1"
            page = await client.get(found.url.join(found.headers["location"]))
            assert page.status_code == 404  # no such task, said on the task page
            assert "cron:tick:1" in page.text
            empty = await client.get("/search", params={"task_id": ""})
            assert empty.headers["location"] == "./queue"
            assert 'id="search"' in (await client.get("/queue")).text


async def test_links_work_behind_a_prefix_stripping_proxy(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    with anyio.fail_after(30):
        async with client_of(mounted(worker), "http://ui.test") as client:
            later = await sleeper.enqueue(1).start(delay=3600)
            page = await client.get("/streaq/tasks/scheduled")
            hrefs = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
            assert hrefs
            # no link names the mount point: the same page served at another prefix still works
            assert not [h for h in hrefs if h.startswith(("/", "http"))]
            assert f"../task/{later.id}" in hrefs
            # each resolves into the UI; the links (not the form actions) to pages that answer
            for href in set(hrefs):
                assert page.url.join(href).path.startswith("/streaq/"), href
            for href in set(re.findall(r'(?:href|src)="([^"?][^"]*)"', page.text)):
                assert (await client.get(page.url.join(href))).status_code == 200, href
            await later.abort()


async def test_live_refresh_script_and_chart_axes(redis_url: str, clean_queue: str) -> None:
    def key_needed(request: Request) -> None:
        if request.headers.get("x-key") != "k":
            raise HTTPException(401)

    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with serving(worker, run=False, auth=key_needed) as client:
            assert (await client.get("/live.js")).status_code == 401  # behind auth like the rest
            script = await client.get("/live.js", headers={"x-key": "k"})
            assert script.headers["content-type"].startswith("text/javascript")
            assert "data-live" in script.text
            assert_secured(script)
            page = (await client.get("/queue", headers={"x-key": "k"})).text
            assert 'id="live-toggle"' in page
            assert "data-live" in page
            chart = page[page.index('<svg id="throughput"') : page.index("</svg>")]
            assert 'id="x-axis"' in chart
            assert 'id="y-axis"' in chart
            assert "tasks/min" in chart
            assert "minute (UTC)" in chart
            assert len(re.findall(r'<text class="x"', chart)) == 4  # 3 minutes + the title


async def test_new_actions_are_behind_host_check_auth_and_csrf(
    redis_url: str, clean_queue: str
) -> None:
    def key_needed(request: Request) -> None:
        if request.headers.get("x-key") != "k":
            raise HTTPException(401)

    worker = make_worker(redis_url, clean_queue)
    actions = ["/task/x/retry", "/task/x/delete", "/dead-letters/x/purge", "/dead-letters/purge"]
    with anyio.fail_after(30):
        async with client_of(
            mounted(worker, auth=key_needed, allowed_hosts=["ui.example"]), "http://ui.example"
        ) as client:
            for path in actions:
                refused = await client.post("/streaq" + path, headers={"x-key": "k", "Host": "x"})
                assert refused.status_code == 400, path  # the Host check comes first
                assert (await client.post("/streaq" + path)).status_code == 401, path
                forged = await client.post("/streaq" + path, headers={"x-key": "k"})
                assert forged.status_code == 403, path  # no CSRF token
                assert_secured(forged)
            search = await client.get("/streaq/search?task_id=x")
            assert search.status_code == 401
