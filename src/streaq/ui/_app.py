"""The UI's FastAPI router (pages, actions, CSRF) and the stand-alone app of ``streaq web``.

Every request costs a bounded amount of Redis work: listings take at most :data:`MAX_LIMIT` rows
from at most :data:`MAX_OFFSET` on (larger values are a 422), and what needs ``SCAN`` -- the
finished tasks, whose result keys have no index, and the overview's counts and throughput --
examines at most ``scan_limit`` (:data:`SCAN_LIMIT`) keys of the database, the overview's figures
being reused for :data:`STATS_TTL` seconds. On a larger database they cover the part scanned, and
the overview says so.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..task import TaskResult, TaskStatus
from ..types import StreaqError
from ..worker import Worker
from ._actions import add_actions
from ._data import StatsCache, chart, remote_traceback
from ._links import install, link_to
from ._security import HostCheck, SecureApp, SecureRoute
from ._stream import add_event_stream, events_since
from .deps import get_allowed_hosts, get_exception_formatter, get_result_formatter, get_worker

__all__ = ["create_app", "create_router", "router"]

_HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "streaq_csrf"
CSRF_FIELD = "csrf_token"
#: statuses with a task list, in the order of a task's life
LISTED = (TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.DONE)
#: the task lists: one per status in :data:`LISTED`, and the failed ones among the done
LISTS = (*(s.value for s in LISTED), "failed")
CHART_WIDTH, CHART_HEIGHT = 520.0, 140.0
#: how often open pages refresh their live parts (ms), unless paused
REFRESH_MS = 3000
#: the most rows a listing page shows
MAX_LIMIT = 500
#: the furthest a listing pages
MAX_OFFSET = 10_000
#: the most keys of the database one page view examines with ``SCAN``, by default
SCAN_LIMIT = 20_000
#: seconds the overview's result figures are reused
STATS_TTL = 5.0
_LIMIT: Any = Query(50, ge=1, le=MAX_LIMIT, description="rows per page")
_OFFSET: Any = Query(0, ge=0, le=MAX_OFFSET, description="rows to skip")
_RESULT_FORMATTER: Any = Depends(get_result_formatter)
_EXCEPTION_FORMATTER: Any = Depends(get_exception_formatter)


class _Csrf:
    """Double-submit CSRF tokens: a random token in an HMAC-signed cookie, echoed by each form.

    A cross-site page can make the browser send the cookie but can neither read it nor forge a
    signed one, so it cannot put the matching token in the form. The signature stops a cookie
    planted by a sibling subdomain from passing with a token of the attacker's choosing.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def token_of(self, request: Request) -> str | None:
        """The token of the request's cookie when its signature holds."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        token, _, signature = cookie.partition(".")
        if token and hmac.compare_digest(signature, self._sign(token)):
            return token
        return None

    def issue(self, request: Request, response: Response, token: str) -> None:
        """Set the cookie of ``token`` on ``response``."""
        response.set_cookie(
            CSRF_COOKIE,
            f"{token}.{self._sign(token)}",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def check(self, request: Request) -> None:
        """Refuse (403) a POST whose form token does not match its signed cookie."""
        expected = self.token_of(request)
        form = await request.form()
        sent = form.get(CSRF_FIELD)
        if expected is None or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")


#: the largest concurrency the UI sets (a typo must not start a million runners)
MAX_SCALE = 10_000


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    install(templates.env)
    return templates


def create_router(
    worker: Worker[Any],
    *,
    auth: Callable[..., Any] | None = None,
    secret: str | bytes | None = None,
    allowed_hosts: Iterable[str] | None = None,
    scan_limit: int | None = SCAN_LIMIT,
) -> APIRouter:
    """The UI's router: mount it with ``app.include_router(router, prefix="/streaq")``.

    The worker must be entered (``async with worker:``) while the app serves requests, in the
    app's lifespan (see :mod:`streaq.ui`). Every answer of the router carries the UI's security
    headers (Content-Security-Policy, ``X-Frame-Options``, ...).

    :param worker: the worker whose queue to show
    :param auth: a FastAPI dependency run before every page and action; raise
        ``HTTPException`` in it to refuse
    :param secret: key signing the CSRF cookie; random per process by default
    :param allowed_hosts: the ``Host`` names the UI answers to (400 otherwise), against DNS
        rebinding: names or addresses, optionally with ``:port``, ``*.example.com``, or ``*`` for
        any. ``None``: a request received on a loopback address must name ``localhost``,
        ``127.0.0.1`` or ``[::1]``, other requests are not checked
    :param scan_limit: the most keys of the Redis database a page view examines with ``SCAN``
        to find finished tasks (their result keys have no index); ``None`` scans the whole
        database on every view, which only suits a small one
    :return: the router
    """

    def given_worker() -> Worker[Any]:
        return worker

    hosts = HostCheck(allowed_hosts)
    return _build_router(given_worker, hosts, auth=auth, secret=secret, scan_limit=scan_limit)


_ALLOWED_HOSTS: Any = Depends(get_allowed_hosts)


def _hosts_of_the_app(request: Request, allowed_hosts: Any = _ALLOWED_HOSTS) -> None:
    """The Host check of :data:`router`, whose allow-list is the ``get_allowed_hosts``
    dependency (which an application overrides)."""
    HostCheck(allowed_hosts)(request)


def _build_router(
    resolve: Callable[..., Any],
    hosts: Callable[..., Any],
    *,
    auth: Callable[..., Any] | None = None,
    secret: str | bytes | None = None,
    scan_limit: int | None = SCAN_LIMIT,
) -> APIRouter:
    """The UI's routes, each getting its worker from the FastAPI dependency ``resolve`` and
    checking the request's ``Host`` with the dependency ``hosts`` (before ``auth``)."""
    worker_dep: Any = Depends(resolve)
    key = secret.encode() if isinstance(secret, str) else secret or secrets.token_bytes(32)
    csrf = _Csrf(key)
    templates = _templates()
    dependencies = [Depends(hosts)]
    if auth is not None:
        dependencies.append(Depends(auth))
    router = APIRouter(dependencies=dependencies, route_class=SecureRoute)
    stats_cache = StatsCache(STATS_TTL, scan_limit)
    css = (_HERE / "static" / "style.css").read_text()
    js = (_HERE / "static" / "live.js").read_text()

    def render(
        request: Request, worker: Worker[Any], name: str, status_code: int = 200, **context: Any
    ) -> Response:
        # one token per browser session: reuse the cookie's, else start one
        token = csrf.token_of(request) or secrets.token_urlsafe(24)
        context.update(
            queue=worker.queue_name,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            lists=LISTS,
            refresh_ms=REFRESH_MS,
            message=request.query_params.get("msg"),
            max_limit=MAX_LIMIT,
            scan_limit=scan_limit,
        )
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
        csrf.issue(request, response, token)
        return response

    def back_to(request: Request, route: str, message: str, **params: str) -> RedirectResponse:
        # POST → 303 → GET, so reloading the page does not repeat the action; relative, as
        # every link of the UI (see ._links)
        url = f"{link_to(request, route, **params)}?{urlencode({'msg': message})}"
        return RedirectResponse(url, status_code=303)

    @router.get("/style.css", name="streaq_css", include_in_schema=False)
    async def style() -> Response:
        return Response(css, media_type="text/css")

    @router.get("/live.js", name="streaq_js", include_in_schema=False)
    async def script() -> Response:
        return Response(js, media_type="text/javascript")

    @router.get("/", name="streaq_root", include_in_schema=False)
    async def root(request: Request) -> Response:
        """The overview, as streaq 7.2's UI did: 303 to the default page."""
        return RedirectResponse(link_to(request, "streaq_overview"), status_code=303)

    @router.get("/search", name="streaq_search")
    async def search(request: Request, task_id: str = "") -> Response:
        """Find a task by its id: 303 to its page (which says so when there is no such task)."""
        task_id = task_id.strip()
        if not task_id:
            return RedirectResponse(link_to(request, "streaq_overview"), status_code=303)
        return RedirectResponse(link_to(request, "streaq_task", task_id=task_id), status_code=303)

    @router.get("/queue", name="streaq_overview")
    async def overview(request: Request, worker: Worker[Any] = worker_dep) -> Response:
        """Counts per status and priority, lag, workers and the throughput chart."""
        found = await worker.inspect()
        stats = await stats_cache.get(worker, found.now_ms)
        return render(
            request,
            worker,
            "overview.html",
            snap=found,
            stats=stats,
            chart=chart(stats.buckets, CHART_WIDTH, CHART_HEIGHT),
            minute_total=sum(b.total for b in stats.buckets),
        )

    @router.get("/tasks/{status}", name="streaq_tasks")
    async def tasks(
        request: Request,
        status: str,
        priority: str | None = None,
        limit: int = _LIMIT,
        offset: int = _OFFSET,
        worker: Worker[Any] = worker_dep,
    ) -> Response:
        """Tasks in ``status`` (or ``failed``: the failures among the done), ``limit`` per page
        from ``offset``, optionally of one priority; finished ones newest first, among those
        found in ``scan_limit`` keys of the database."""
        if status not in LISTS:
            raise HTTPException(404, f"no task list for status {status!r}")
        finished = status in (TaskStatus.DONE.value, "failed")
        if priority == "":
            priority = None  # the filter form's "all" choice
        if priority is not None and priority not in worker.priorities:
            raise HTTPException(400, f"unknown priority {priority!r}")
        page: list[Any]
        if finished:
            # one more than the page, to know whether a next page exists
            page = await worker.finished_tasks(
                limit + 1, offset=offset, failed_only=status == "failed", scan_limit=scan_limit
            )
            has_next, page = len(page) > limit, page[:limit]
        else:
            found = await worker.get_tasks_by_status(
                TaskStatus(status),
                priority=priority,
                limit=offset + limit + 1,
                scan_limit=scan_limit,
            )
            has_next, page = len(found) > offset + limit, list(found[offset : offset + limit])
        return render(
            request,
            worker,
            "tasks.html",
            status=status,
            tasks=page,
            done=finished,
            priorities=worker.priorities,
            priority=priority,
            limit=limit,
            offset=offset,
            has_next=has_next,
        )

    @router.get("/task/{task_id}", name="streaq_task")
    async def task(
        request: Request,
        task_id: str,
        worker: Worker[Any] = worker_dep,
        result_formatter: Callable[[Any], str] = _RESULT_FORMATTER,
        exception_formatter: Callable[[BaseException], str] = _EXCEPTION_FORMATTER,
    ) -> Response:
        """One task: arguments, result or traceback, progress, timings, tries, dependencies."""
        status = await worker.status_by_id(task_id)
        info = None
        result: TaskResult[Any] | None = None
        if status == TaskStatus.DONE:
            try:
                result = await worker.result_by_id(task_id, timeout=1)
            except TimeoutError:
                status = TaskStatus.NOT_FOUND  # it expired between the two reads
        elif status != TaskStatus.NOT_FOUND:
            info = await worker.info_by_id(task_id)
        if info is None and result is None:
            return render(request, worker, "missing.html", status_code=404, task_id=task_id)
        value = error = trace = None
        arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        unreadable = None
        # the latest progress report: kept as long as the result, shown after the end too
        progress = info.progress if info is not None else await worker.progress_by_id(task_id)
        if result is not None:
            if result.success:
                value = result_formatter(result.result)
            else:
                error = exception_formatter(result.exception)
                trace = remote_traceback(result.exception)
                try:
                    arguments = await worker.arguments_by_id(task_id)
                except StreaqError as e:  # undecodable, or failing verification: say why
                    unreadable = str(e)
        return render(
            request,
            worker,
            "task.html",
            task_id=task_id,
            status=info.status if info is not None else status,
            info=info,
            result=result,
            value=value,
            error=error,
            trace=trace,
            arguments=arguments,
            unreadable=unreadable,
            progress=None if progress is None else result_formatter(progress),
            # the page of an unfinished task refreshes as soon as the task's events say so
            events_since=events_since(worker) if info is not None else None,
        )

    @router.get("/cron", name="streaq_cron")
    async def cron(request: Request, worker: Worker[Any] = worker_dep) -> Response:
        """Registered cron jobs with their next firing and that firing's task id."""
        found = await worker.inspect()
        return render(request, worker, "cron.html", jobs=found.crons, now_ms=found.now_ms)

    @router.get("/workers", name="streaq_workers")
    async def workers(request: Request, worker: Worker[Any] = worker_dep) -> Response:
        """Workers that served the queue, with their last heartbeat."""
        found = await worker.inspect()
        return render(request, worker, "workers.html", snap=found)

    @router.post("/workers/scale", name="streaq_scale", dependencies=[Depends(csrf.check)])
    async def scale(request: Request, worker: Worker[Any] = worker_dep) -> Response:
        """Set the concurrency of every running worker (``Worker.scale``); back to the workers."""
        form = await request.form()
        raw = form.get("concurrency")
        text = raw.strip() if isinstance(raw, str) else ""
        if not text.isdigit() or not 1 <= int(text) <= MAX_SCALE:
            return back_to(
                request, "streaq_workers", f"concurrency must be a number from 1 to {MAX_SCALE}"
            )
        await worker.scale(int(text))
        return back_to(request, "streaq_workers", f"every running worker runs {text} at once now")

    @router.get("/dead-letters", name="streaq_dead_letters")
    async def dead_letters(
        request: Request,
        limit: int = _LIMIT,
        offset: int = _OFFSET,
        worker: Worker[Any] = worker_dep,
    ) -> Response:
        """Tasks that can never succeed (see :meth:`~streaq.Worker.dead_letters`), oldest first."""
        # one more than the page, to know whether a next page exists
        found = (await worker.dead_letters(offset + limit + 1))[offset:]
        letters = found[:limit]
        return render(
            request,
            worker,
            "dead_letters.html",
            letters=letters,
            limit=limit,
            offset=offset,
            has_next=len(found) > limit,
        )

    add_actions(router, worker_dep, csrf.check, back_to)
    add_event_stream(router, worker_dep)
    return router


#: streaq 7.2's way to mount the UI: include this router and override
#: :func:`~streaq.ui.deps.get_worker` (``app.dependency_overrides[get_worker] = lambda: worker``);
#: its ``Host`` allow-list is :func:`~streaq.ui.deps.get_allowed_hosts`
router = _build_router(get_worker, _hosts_of_the_app)


def create_app(
    worker: Worker[Any],
    *,
    auth: Callable[..., Any] | None = None,
    secret: str | bytes | None = None,
    allowed_hosts: Iterable[str] | None = None,
    scan_limit: int | None = SCAN_LIMIT,
) -> FastAPI:
    """The stand-alone UI application of ``streaq web``: the router at ``/``, the worker
    entered as a producer for the app's lifetime. The ``Host`` check and the security headers
    apply to every response of the application, not only to the router's.

    :param worker: the worker whose queue to show
    :param auth: see :func:`create_router`
    :param secret: see :func:`create_router`
    :param allowed_hosts: see :func:`create_router`
    :param scan_limit: see :func:`create_router`
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with worker:
            yield

    allowed = None if allowed_hosts is None else list(allowed_hosts)
    app = FastAPI(
        title=f"streaq · {worker.queue_name}",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(
        create_router(
            worker, auth=auth, secret=secret, allowed_hosts=allowed, scan_limit=scan_limit
        )
    )
    app.add_middleware(SecureApp, hosts=HostCheck(allowed))
    return app
