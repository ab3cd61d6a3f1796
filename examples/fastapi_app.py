"""A FastAPI application that enqueues streaq tasks and waits for their results.

The web process is a *producer*: its lifespan enters ``async with worker:``, which connects to
Redis, and never runs tasks. Worker processes run them::

    pip install 'streaq[fastapi]' uvicorn
    streaq run fastapi_app:worker          # in examples/, one terminal (or --workers 4)
    uvicorn fastapi_app:app                # in examples/, another terminal

    curl -X POST 'localhost:8000/add?a=2&b=3'     # {"task_id": "..."}
    curl 'localhost:8000/tasks/<task_id>'        # {"task_id": "...", "success": true, "result": 5}

``REDIS_URL`` and ``STREAQ_QUEUE`` choose the Redis server and the queue.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from streaq import TaskStatus, Worker

worker: Worker[None] = Worker(
    redis_url=os.environ.get("REDIS_URL", "redis://localhost:6379"),
    queue_name=os.environ.get("STREAQ_QUEUE", "fastapi-example"),
)


@worker.task
async def add(a: int, b: int) -> int:
    """The task: runs in a worker process."""
    return a + b


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # one connection pool for the application's lifetime, shared by all requests
    async with worker:
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/add")
async def enqueue_add(a: int, b: int) -> dict[str, str]:
    """Enqueue ``add(a, b)`` and answer at once with the task's id."""
    task = await add.enqueue(a, b)
    return {"task_id": task.id}


@app.get("/tasks/{task_id}")
async def task_result(task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for the task's result.

    404 for an unknown task, 504 when it is not done in time.
    """
    if await worker.status_by_id(task_id) == TaskStatus.NOT_FOUND:
        raise HTTPException(status_code=404, detail=f"no task {task_id}")
    try:
        result = await worker.result_by_id(task_id, timeout=timeout)
    except TimeoutError:
        raise HTTPException(status_code=504, detail=f"task {task_id} is not done yet") from None
    if result.success:
        return {"task_id": task_id, "success": True, "result": result.result}
    return {"task_id": task_id, "success": False, "error": repr(result.exception)}
