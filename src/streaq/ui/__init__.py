"""streaq's monitoring web UI (extra ``streaq[web]``): a FastAPI router and ``streaq web``.

Run it on its own::

    pip install 'streaq[web]'
    streaq web myapp.tasks:worker --host 127.0.0.1 --port 8000

or mount the router in your own FastAPI application. The UI is a *producer*: it reads the queue
and sends aborts, so the worker must be entered (``async with worker:``) for the application's
lifetime; the application's lifespan does that, exactly as ``streaq web`` does::

    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    from streaq.ui import create_router
    from myapp.tasks import worker

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with worker:  # connect once, share the connection pool with every request
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router(worker), prefix="/streaq")

streaq 7.2's way works too: include the module's ready-made ``router`` and override its
``get_worker`` dependency (see :mod:`streaq.ui.deps`)::

    from streaq.ui import get_worker, router

    app = FastAPI(lifespan=lifespan)
    app.dependency_overrides[get_worker] = lambda: worker
    app.include_router(router, prefix="/streaq")

Either way, ``/`` redirects (303) to the overview page, ``/queue``. Links, forms and redirects
are relative, so the UI works under any prefix (also behind a proxy that strips it).

Access control: the UI can abort, retry and delete tasks and replay or purge dead letters, so
anything but a trusted network should put it behind authentication. ``auth`` is a FastAPI
dependency run before every page and action; raise ``HTTPException`` in it to refuse the
request::

    import os
    import secrets
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    basic = HTTPBasic()

    def admin_only(credentials: HTTPBasicCredentials = Depends(basic)) -> None:
        ok = secrets.compare_digest(credentials.username, "admin") and secrets.compare_digest(
            credentials.password, os.environ["STREAQ_UI_PASSWORD"]
        )
        if not ok:
            raise HTTPException(401, headers={"WWW-Authenticate": "Basic"})

    app.include_router(create_router(worker, auth=admin_only), prefix="/streaq")

``streaq web --auth module:callable`` serves the stand-alone UI with such a dependency.

DNS rebinding: a request received on a loopback address must name ``localhost``, ``127.0.0.1`` or
``[::1]`` in its ``Host`` header, or it is refused with 400; ``allowed_hosts=[...]`` (of
``create_router`` and ``create_app``; ``get_allowed_hosts`` for :data:`router`) lists the names
to accept instead. Every answer carries a Content-Security-Policy allowing only the UI's own
stylesheet and script (nothing inline), ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``,
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``; listings accept at most
500 rows per page.

Actions are POST forms protected against cross-site request forgery with a double-submit token:
the token is kept in a signed cookie and repeated in each form; a POST whose form token is
missing or differs from the cookie's is refused with 403. Pass the same ``secret`` to every
process when several serve the UI behind one address (the default is random per process, so a
restart only makes open pages fetch a fresh token).
"""

from __future__ import annotations

from ._app import create_app, create_router, router
from .deps import get_allowed_hosts, get_exception_formatter, get_result_formatter, get_worker

__all__ = [
    "create_app",
    "create_router",
    "get_allowed_hosts",
    "get_exception_formatter",
    "get_result_formatter",
    "get_worker",
    "router",
]
