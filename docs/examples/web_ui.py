"""Web UI: the streaq router mounted in a FastAPI app, behind an auth hook, with CSRF checks."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
import httpx
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from streaq import TaskStatus, Worker
from streaq.ui import create_router, get_worker, router

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")
os.environ.setdefault("STREAQ_UI_PASSWORD", "docs-only")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


@worker.task
async def report(month: str) -> str:
    return f"report for {month}"


# --8<-- [start:auth]
basic = HTTPBasic()


def admin_only(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> None:
    """Run before every page and action of the UI; raising refuses the request."""
    good_user = secrets.compare_digest(credentials.username, "admin")
    good_password = secrets.compare_digest(credentials.password, os.environ["STREAQ_UI_PASSWORD"])
    if not (good_user and good_password):
        raise HTTPException(401, headers={"WWW-Authenticate": "Basic"})


# --8<-- [end:auth]


# --8<-- [start:mount]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with worker:  # the UI is a producer: connect once for the app's lifetime
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(
    create_router(worker, auth=admin_only, secret=os.environ.get("STREAQ_UI_SECRET")),
    prefix="/streaq",
)
# --8<-- [end:mount]


# --8<-- [start:mount72]
legacy = FastAPI(lifespan=lifespan)  # the same lifespan: it enters the worker
legacy.dependency_overrides[get_worker] = lambda: worker  # streaq.ui.deps.get_worker
legacy.include_router(router, prefix="/streaq")
# --8<-- [end:mount72]


async def main() -> None:
    admin = ("admin", os.environ["STREAQ_UI_PASSWORD"])
    transport = httpx.ASGITransport(app=app)
    # ASGITransport does not run the lifespan; enter it as a server would
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://ui") as client,
    ):
        # --8<-- [start:check]
        assert (await client.get("/streaq/")).status_code == 401  # no credentials
        home = await client.get("/streaq/", auth=admin)
        assert home.status_code == 303  # to the overview
        overview = await client.get(home.url.join(home.headers["location"]), auth=admin)
        assert overview.status_code == 200

        task = await report.enqueue("2025-01").start(delay=3600)  # no worker runs
        page = await client.get(f"/streaq/task/{task.id}", auth=admin)
        assert page.status_code == 200

        abort_url = f"/streaq/task/{task.id}/abort"
        # a POST without the page's CSRF token is refused, credentials or not
        refused = await client.post(abort_url, auth=admin, data={"csrf_token": "guess"})
        assert refused.status_code == 403
        # the page's form carries the token that matches its signed cookie
        token = client.cookies["streaq_csrf"].partition(".")[0]
        done = await client.post(abort_url, auth=admin, data={"csrf_token": token})
        assert done.status_code == 303  # back to the task's page
        assert await task.status() == TaskStatus.DONE  # aborted: a failed result
        # --8<-- [end:check]

    async with (
        legacy.router.lifespan_context(legacy),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=legacy), base_url="http://ui"
        ) as client,
    ):
        page = await client.get(f"/streaq/task/{task.id}")
        assert page.status_code == 200
        assert "StreaqCancelled" in page.text


if __name__ == "__main__":
    anyio.run(main)
