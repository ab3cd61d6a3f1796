"""The UI's actions: POST forms that change the queue, each behind the CSRF check.

Every action answers with a 303 to a page (relative, see :mod:`._links`) carrying a message, so
reloading the page does not repeat it. The router's own dependencies (the ``Host`` check, then the
``auth`` hook) run first, as for every page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..types import StreaqError
from ..worker import Worker

__all__ = ["add_actions"]


def add_actions(
    router: APIRouter,
    worker_dep: Any,
    csrf_check: Callable[..., Any],
    back_to: Callable[..., Response],
) -> None:
    """Add the action routes to ``router``.

    :param worker_dep: the ``Depends`` giving the worker
    :param csrf_check: the dependency refusing (403) a POST without the session's token
    :param back_to: ``back_to(request, route, message, **params)``, the 303 to a page
    """
    guarded = [Depends(csrf_check)]

    @router.post("/task/{task_id}/abort", name="streaq_abort", dependencies=guarded)
    async def abort(request: Request, task_id: str, worker: Worker[Any] = worker_dep) -> Response:
        """Abort a task (queued, delayed or running); back to its page."""
        stopped = await worker.abort_by_id(task_id)
        message = "aborted" if stopped else "not aborted: the task had already finished"
        return back_to(request, "streaq_task", message, task_id=task_id)

    @router.post("/task/{task_id}/unschedule", name="streaq_unschedule", dependencies=guarded)
    async def unschedule(
        request: Request, task_id: str, worker: Worker[Any] = worker_dep
    ) -> Response:
        """Stop a task repeating on a schedule; back to its page."""
        stopped = await worker.unschedule_by_id(task_id)
        message = "unscheduled" if stopped else "not unscheduled: the task is not scheduled"
        return back_to(request, "streaq_task", message, task_id=task_id)

    @router.post("/task/{task_id}/retry", name="streaq_retry", dependencies=guarded)
    async def retry(request: Request, task_id: str, worker: Worker[Any] = worker_dep) -> Response:
        """Queue a failed task again with its kept arguments; back to its page."""
        try:
            queued = await worker.retry_by_id(task_id)
        except StreaqError as e:  # live again, or its kept call failed verification
            message = f"not retried: {e}"
        else:
            message = (
                "retried: queued again"
                if queued
                else "not retried: no failed call is kept (it expired, or was retried or deleted)"
            )
        return back_to(request, "streaq_task", message, task_id=task_id)

    @router.post("/task/{task_id}/delete", name="streaq_delete", dependencies=guarded)
    async def delete(request: Request, task_id: str, worker: Worker[Any] = worker_dep) -> Response:
        """Delete a finished task's result (and kept arguments); to the failed tasks."""
        try:
            deleted = await worker.delete_by_id(task_id)
        except StreaqError as e:
            return back_to(request, "streaq_task", f"not deleted: {e}", task_id=task_id)
        message = f"deleted {task_id}" if deleted else f"not deleted: {task_id} has no result"
        return back_to(request, "streaq_tasks", message, status="failed")

    @router.post("/dead-letters/{task_id}/replay", name="streaq_replay", dependencies=guarded)
    async def replay(request: Request, task_id: str, worker: Worker[Any] = worker_dep) -> Response:
        """Put a dead letter back on the queue; back to the dead letters."""
        replayed = await worker.replay_dead_letters([task_id])
        message = f"replayed {task_id}" if replayed else f"not replayed: no dead letter {task_id}"
        return back_to(request, "streaq_dead_letters", message)

    @router.post("/dead-letters/{task_id}/purge", name="streaq_purge", dependencies=guarded)
    async def purge(request: Request, task_id: str, worker: Worker[Any] = worker_dep) -> Response:
        """Delete the dead letters of one task; back to the dead letters."""
        gone = await worker.purge_dead_letters([task_id])
        return back_to(request, "streaq_dead_letters", f"purged {gone} dead letter(s) of {task_id}")

    @router.post("/dead-letters/purge", name="streaq_purge_all", dependencies=guarded)
    async def purge_all(request: Request, worker: Worker[Any] = worker_dep) -> Response:
        """Delete every dead letter; back to the dead letters."""
        gone = await worker.purge_dead_letters()
        return back_to(request, "streaq_dead_letters", f"purged {gone} dead letter(s)")
