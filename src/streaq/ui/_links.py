"""Relative links and the templates' filters.

Every link, form action and redirect of the UI is *relative* to the page it appears on
(``../task/abc``, ``?offset=50``): the UI then works wherever it is mounted, including behind a
reverse proxy that strips a path prefix before the request reaches the application (the
application sees ``/queue`` while the browser is at ``/streaq/queue``; an absolute link would
leave the prefix out). Path parameters are percent-encoded, so a task id such as
``cron:tick:1700000000000`` is never read as a URL scheme.
"""

from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from jinja2 import pass_context

__all__ = ["duration", "link_to", "page_link", "relative", "when"]


def relative(from_path: str, to_path: str) -> str:
    """The reference that leads from the page at ``from_path`` to ``to_path`` (both absolute
    and percent-encoded alike), e.g. ``/streaq/task/a`` to ``/streaq/tasks/done``:
    ``../tasks/done``."""
    base = from_path.rpartition("/")[0] or "/"
    to_dir, _, name = to_path.rpartition("/")
    up = posixpath.relpath(to_dir or "/", base)
    rel = name if up == "." else f"{up}/{name}"
    # "./" keeps a first segment with a colon from being taken for a scheme
    return rel if rel.startswith("..") else f"./{rel}"


def link_to(request: Request, route: str, **params: str) -> str:
    """A relative link from the request's page to the route ``route`` of the UI."""
    target = request.url_for(route, **{k: quote(str(v), safe="") for k, v in params.items()})
    return relative(quote(request.url.path, safe="/"), target.path)


def page_link(request: Request, **params: Any) -> str:
    """A query-only link to this page with ``params`` changed (paging keeps the filters)."""
    query = dict(request.query_params)
    query.pop("msg", None)
    query.update({k: str(v) for k, v in params.items()})
    return "?" + urlencode(query)


@pass_context
def _link(context: Any, route: str, **params: str) -> str:
    return link_to(context["request"], route, **params)


@pass_context
def _page(context: Any, **params: Any) -> str:
    return page_link(context["request"], **params)


def when(ms: int | None) -> str:
    """A time in ms since the epoch as local date and time, ``-`` for none."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: int | None) -> str:
    """A duration in ms, in the unit that reads best; ``-`` for none."""
    if ms is None or ms < 0:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def install(env: Any) -> None:
    """Add the filters and link helpers to a Jinja environment."""
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.globals["link"] = _link
    env.globals["page"] = _page
