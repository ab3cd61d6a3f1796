"""The UI's defences over HTTP: the Host allow-list (DNS rebinding), the security headers on every
answer and bounded listing parameters.

httpx's ASGI transport puts the base URL's host in the ASGI scope's ``server``, as a server puts
the address a request arrived on: a base URL of ``http://127.0.0.1:8000`` is a UI listening on
loopback, and a ``Host`` header sent with it is what a browser would send.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from streaq import Worker
from streaq.ui import create_app, create_router, get_allowed_hosts, get_worker, router
from streaq.ui._security import SECURITY_HEADERS, HostCheck

from .test_http import TOKEN, make_worker

pytestmark = pytest.mark.anyio

LOOPBACK = "http://127.0.0.1:8000"
PAGES = ["/queue", "/tasks/scheduled", "/tasks/done", "/cron", "/workers", "/dead-letters"]


@asynccontextmanager
async def client_of(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of ``app`` (its lifespan entered) as if it listened on ``base_url``."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client,
    ):
        yield client


def mounted(worker: Worker[Any], **options: Any) -> FastAPI:
    """An application of its own mounting ``create_router(worker, **options)`` under /streaq."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with worker:
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router(worker, **options), prefix="/streaq")

    @app.get("/elsewhere")
    async def elsewhere() -> dict[str, str]:
        return {"app": "own"}

    return app


def assert_secured(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)


@pytest.mark.parametrize(
    ("host", "server", "allowed", "ok"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000), None, True),
        ("localhost", ("127.0.0.1", 8000), None, True),
        ("LOCALHOST.:8000", ("127.0.0.1", 8000), None, True),
        ("[::1]:8000", ("::1", 8000), None, True),
        ("localhost:1234", ("::ffff:127.0.0.1", 8000), None, True),
        ("evil.example", ("127.0.0.1", 8000), None, False),
        ("evil.example:8000", ("127.0.0.2", 8000), None, False),
        ("localhost.evil.example", ("127.0.0.1", 8000), None, False),
        (None, ("127.0.0.1", 8000), None, False),
        ("", ("::1", 8000), None, False),
        ("evil.example", ("10.0.0.5", 8000), None, True),  # not loopback: not checked
        ("evil.example", None, None, True),
        ("ui.example", ("10.0.0.5", 80), ["ui.example"], True),
        ("ui.example:8443", ("10.0.0.5", 80), ["UI.example"], True),
        ("evil.example", ("10.0.0.5", 80), ["ui.example"], False),
        ("localhost", ("127.0.0.1", 80), ["ui.example"], False),  # a list replaces the default
        ("ui.example:8443", ("10.0.0.5", 80), ["ui.example:8443"], True),
        ("ui.example:8444", ("10.0.0.5", 80), ["ui.example:8443"], False),
        ("a.ui.example", ("10.0.0.5", 80), ["*.ui.example"], True),
        ("ui.example", ("10.0.0.5", 80), ["*.ui.example"], False),
        ("evilui.example", ("10.0.0.5", 80), ["*.ui.example"], False),
        ("[::1]", ("10.0.0.5", 80), ["::1"], True),
        ("anything", ("127.0.0.1", 80), ["*"], True),
        ("ui.example", ("10.0.0.5", 80), "ui.example", True),  # a str is one name
        ("u", ("10.0.0.5", 80), "ui.example", False),
        (None, ("10.0.0.5", 80), ["ui.example"], False),
    ],
)
def test_host_check(
    host: str | None, server: tuple[str, int] | None, allowed: list[str] | str | None, ok: bool
) -> None:
    assert HostCheck(allowed).allows(host, server) is ok


async def test_loopback_ui_refuses_foreign_host_names(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with client_of(create_app(worker), LOOPBACK) as client:
            for host in ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000"]:
                page = await client.get("/queue", headers={"Host": host})
                assert page.status_code == 200, host
            for path in [*PAGES, "/", "/style.css", "/no-such-page", "/task/x"]:
                refused = await client.get(path, headers={"Host": "evil.example"})
                assert refused.status_code == 400, path
                assert "invalid Host header" in refused.text
                assert_secured(refused)
            refused = await client.post(
                "/task/x/abort", headers={"Host": "evil.example:8000"}, data={"csrf_token": "x"}
            )
            assert refused.status_code == 400
        # the same app reached on another address cannot know its names: no check
        async with client_of(create_app(worker), "http://ui.test") as client:
            page = await client.get("/queue", headers={"Host": "evil.example"})
            assert page.status_code == 200


async def test_allowed_hosts_replace_the_loopback_names(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    app = create_app(worker, allowed_hosts=["ui.example.com", "*.ops.example"])
    with anyio.fail_after(30):
        for base in [LOOPBACK, "http://10.1.2.3:8000"]:
            async with client_of(app, base) as client:
                for host in ["ui.example.com", "ui.example.com:443", "a.ops.example"]:
                    page = await client.get("/queue", headers={"Host": host})
                    assert page.status_code == 200, (base, host)
                for host in ["localhost", "evil.example", "ops.example"]:
                    refused = await client.get("/queue", headers={"Host": host})
                    assert refused.status_code == 400, (base, host)
        async with client_of(create_app(worker, allowed_hosts=["*"]), LOOPBACK) as client:
            page = await client.get("/queue", headers={"Host": "evil.example"})
            assert page.status_code == 200


async def test_mounted_router_checks_hosts_on_its_routes(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with client_of(mounted(worker), LOOPBACK) as client:
            assert (await client.get("/streaq/queue")).status_code == 200
            refused = await client.get("/streaq/queue", headers={"Host": "evil.example"})
            assert refused.status_code == 400
            assert_secured(refused)
            # the application's own routes are its business
            own = await client.get("/elsewhere", headers={"Host": "evil.example"})
            assert own.status_code == 200
        app = mounted(worker, allowed_hosts=["ui.example.com"])
        async with client_of(app, LOOPBACK) as client:
            page = await client.get("/streaq/queue", headers={"Host": "ui.example.com"})
            assert page.status_code == 200
            assert (await client.get("/streaq/queue")).status_code == 400


async def test_router_of_72_takes_its_allow_list_from_a_dependency(
    redis_url: str, clean_queue: str
) -> None:
    worker = make_worker(redis_url, clean_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with worker:
            yield

    app = FastAPI(lifespan=lifespan)
    app.dependency_overrides[get_worker] = lambda: worker
    app.include_router(router, prefix="/streaq")
    with anyio.fail_after(30):
        async with client_of(app, LOOPBACK) as client:
            assert (await client.get("/streaq/queue")).status_code == 200
            refused = await client.get("/streaq/queue", headers={"Host": "evil.example"})
            assert refused.status_code == 400
            app.dependency_overrides[get_allowed_hosts] = lambda: ["evil.example"]
            allowed = await client.get("/streaq/queue", headers={"Host": "evil.example"})
            assert allowed.status_code == 200
            assert (await client.get("/streaq/queue")).status_code == 400


async def test_every_answer_carries_the_security_headers(redis_url: str, clean_queue: str) -> None:
    def key_needed(request: Request) -> None:
        if request.headers.get("x-key") != "k":
            raise HTTPException(401, "no key")

    worker = make_worker(redis_url, clean_queue)
    sleeper = worker.registry["sleeper"]
    key = {"x-key": "k"}
    with anyio.fail_after(30):
        for app, prefix in [
            (create_app(worker, auth=key_needed), ""),
            (mounted(worker, auth=key_needed), "/streaq"),
        ]:
            async with client_of(app, "http://ui.test") as client:
                task = await sleeper.enqueue(1).start(delay=3600)
                answers = [await client.get(prefix + path, headers=key) for path in PAGES]
                assert [a.status_code for a in answers] == [200] * len(PAGES)
                answers += [
                    await client.get(f"{prefix}/task/{task.id}", headers=key),
                    await client.get(f"{prefix}/", headers=key),  # 303
                    await client.get(f"{prefix}/style.css", headers=key),
                    await client.get(f"{prefix}/task/no-such-task", headers=key),  # 404 page
                    await client.get(f"{prefix}/tasks/nope", headers=key),  # HTTPException 404
                    await client.get(f"{prefix}/tasks/queued?priority=x", headers=key),  # 400
                    await client.get(f"{prefix}/tasks/queued?limit=0", headers=key),  # 422
                    await client.get(f"{prefix}/queue"),  # 401 from the auth hook
                    await client.post(f"{prefix}/task/{task.id}/abort", headers=key),  # 403
                ]
                statuses = [a.status_code for a in answers[len(PAGES) :]]
                assert statuses == [200, 303, 200, 404, 404, 400, 422, 401, 403]
                token = TOKEN.search(answers[len(PAGES)].text)
                assert token is not None
                aborted = await client.post(
                    f"{prefix}/task/{task.id}/abort", headers=key, data={"csrf_token": token[1]}
                )
                assert aborted.status_code == 303
                answers.append(aborted)
                if not prefix:  # the stand-alone app secures even what is not the UI's
                    answers.append(await client.get("/no-such-page", headers=key))
                    assert answers[-1].status_code == 404
                for answer in answers:
                    assert_secured(answer)
                    if answer.status_code == 200 and answer.text.startswith("<!doctype"):
                        assert_no_inline_code(answer.text)
                # the 422 keeps FastAPI's shape
                detail = answers[len(PAGES) + 6].json()["detail"]
                assert detail[0]["loc"] == ["query", "limit"]
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp  # the UI's own live.js, nothing inline
    assert "unsafe" not in csp


def assert_no_inline_code(html: str) -> None:
    """What the CSP would block: inline scripts, event handlers, inline styles. The one script a
    page may load is the UI's own file, with nothing inline."""
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.IGNORECASE | re.DOTALL)
    assert scripts == [""]
    assert re.search(r'<script src="[^":]*live\.js" defer></script>', html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)
    assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE)
    assert "<style" not in html.lower()
    assert "javascript:" not in html.lower()


async def test_listing_parameters_are_bounded(redis_url: str, clean_queue: str) -> None:
    worker = make_worker(redis_url, clean_queue)
    with anyio.fail_after(30):
        async with client_of(create_app(worker), "http://ui.test") as client:
            for path in ["/tasks/queued", "/tasks/done", "/dead-letters"]:
                bad: list[tuple[str, str]] = [
                    ("limit", "501"),
                    ("limit", str(10**12)),
                    ("limit", "0"),
                    ("limit", "many"),
                    ("offset", "-1"),
                    ("offset", "10001"),
                    ("offset", str(10**30)),
                ]
                for field, value in bad:
                    params = {field: value}
                    refused = await client.get(path, params=params)
                    assert refused.status_code == 422, (path, params)
                    assert refused.json()["detail"][0]["loc"] == ["query", field]
                edge = await client.get(path, params={"limit": 500, "offset": 10_000})
                assert edge.status_code == 200, path
            page = await client.get("/tasks/queued")
            assert 'max="500"' in page.text  # the form says so too
