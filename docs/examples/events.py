"""Progress and events: tasks report progress, callers follow a task's events or the queue's."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio

from streaq import Worker
from streaq.task import EventKind, TaskEvent

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

# about 10,000 events are kept by default; events_maxlen=0 turns the event stream off
worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, events_maxlen=1000)


# --8<-- [start:report]
@worker.task
async def import_rows(rows: int) -> int:
    for done in range(0, rows + 1, rows // 4):
        # ... import a chunk ...
        await import_rows.context.progress({"done": done, "of": rows})
    return rows


@worker.task
def resize(images: int) -> int:
    for done in range(1, images + 1):
        resize.context.progress(done / images)  # a sync task: returns once it is recorded
    return images


# --8<-- [end:report]


# --8<-- [start:sse]
def server_sent_event(event: TaskEvent) -> str:
    """One event in the text/event-stream format; its id lets a browser resume after it."""
    data = {"task": event.task_id, "fn": event.fn_name, "time": event.time, "tries": event.tries}
    if event.kind is EventKind.PROGRESS:
        data["progress"] = event.progress
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"


async def sse_stream(last_event_id: str | None) -> AsyncGenerator[str, None]:
    """The body of a text/event-stream response: a browser reconnecting sends the
    Last-Event-ID header, and the stream resumes after that event."""
    async with aclosing(worker.events(since=last_event_id)) as events:
        async for event in events:
            yield server_sent_event(event)


# --8<-- [end:sse]


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)

        # --8<-- [start:follow]
        task = await import_rows.enqueue(100)
        async for event in task.events():  # ends after the task's final event
            print(event.kind, event.progress or "")
        assert event.kind is EventKind.FINISHED
        assert await task.progress() == {"done": 100, "of": 100}  # kept as long as the result
        # --8<-- [end:follow]

        other = await resize.enqueue(4)
        kinds = [event.kind async for event in other.events()]
        assert kinds == ["enqueued", "started", *["progress"] * 4, "finished"]
        assert await other.progress() == 1.0

        # the queue's stream, from the start of its history, resumed after an event
        frames: list[str] = []
        async with aclosing(sse_stream("0")) as body:
            async for frame in body:
                frames.append(frame)
                if len(frames) == 3:
                    break
        assert frames[0].startswith("id: ")
        assert "\nevent: enqueued\n" in frames[0]
        third = frames[2].split("\n")[0].removeprefix("id: ")
        async with aclosing(worker.events(since=third)) as events:
            async for event in events:
                assert event.kind is EventKind.PROGRESS  # the one after the third
                break
        tg.cancel_scope.cancel()
