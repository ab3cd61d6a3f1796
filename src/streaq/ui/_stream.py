"""The live updates of a task's page: the task's events as server-sent events.

The page of an unfinished task names this route (``data-events``) when the queue writes events;
``live.js`` opens an ``EventSource`` on it and refreshes the page's live parts as soon as an event
arrives, rather than at the next periodic refresh, and closes it at the task's final event. The
stream carries the events after ``since`` -- a stream id a little older than the page, so that an
event written between the page and the stream's first read is not missed (one written just
before the page only refreshes it once more) -- or after the ``Last-Event-ID`` that a
reconnecting browser sends, and ends after the task's final event. A task that has ended gets
``204 No Content``, which tells a browser not to reconnect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from ..task import TaskEvent, TaskStatus
from ..types import StreaqError
from ..utils import now_ms
from ..worker import Worker

__all__ = ["add_event_stream", "events_since", "server_sent_event"]


def server_sent_event(event: TaskEvent) -> str:
    """One event in the ``text/event-stream`` format (the event's kind names it)."""
    data = {"task_id": event.task_id, "time": event.time, "tries": event.tries}
    return f"id: {event.id}\nevent: {event.kind.value}\ndata: {json.dumps(data)}\n\n"


#: how much older than a page its event stream starts (ms): more than the clocks of the UI's host
#: and Redis (which stamps stream ids) differ by, and than the stream takes to open
SINCE_MARGIN_MS = 10_000


def events_since(worker: Worker[Any]) -> str | None:
    """Where the event stream of a task's page starts (``None``: the queue writes no events)."""
    if worker.events_maxlen == 0:
        return None
    return str(max(0, now_ms() - SINCE_MARGIN_MS))


def add_event_stream(router: APIRouter, worker_dep: Any) -> None:
    """Add the route of a task's event stream to ``router``.

    :param worker_dep: the ``Depends`` giving the worker
    """

    @router.get("/task/{task_id}/events", name="streaq_task_events")
    async def task_events(
        request: Request, task_id: str, worker: Worker[Any] = worker_dep
    ) -> Response:
        """The events of a task until its final one, as ``text/event-stream``."""
        if worker.events_maxlen == 0:
            raise HTTPException(404, "this queue writes no events (events_maxlen=0)")
        try:
            since = request.headers.get("last-event-id") or request.query_params.get("since")
            events = worker.events(
                since=since or None,
                task_id=task_id,
                until_final=True,
            )
        except StreaqError as e:
            raise HTTPException(400, str(e)) from None
        if await worker.status_by_id(task_id) in (TaskStatus.DONE, TaskStatus.NOT_FOUND):
            return Response(status_code=204)  # the iterator never started: nothing to close

        async def body() -> AsyncIterator[str]:
            async with aclosing(events) as stream:
                async for event in stream:
                    yield server_sent_event(event)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )
