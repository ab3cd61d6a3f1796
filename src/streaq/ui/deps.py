"""The UI's FastAPI dependencies, which an application overrides (as with streaq 7.2)::

    from fastapi import FastAPI
    from streaq.ui import router
    from streaq.ui.deps import get_worker

    app = FastAPI(lifespan=lifespan)  # the lifespan enters the worker: ``async with worker:``
    app.dependency_overrides[get_worker] = lambda: worker
    app.include_router(router, prefix="/streaq")

``get_result_formatter`` and ``get_exception_formatter`` choose how the task page shows a result
or an exception; they apply to every router of the application, ``create_router``'s too.
``get_allowed_hosts`` is the ``Host`` allow-list of this router (``create_router`` takes its own
``allowed_hosts``)::

    app.dependency_overrides[get_allowed_hosts] = lambda: ["ui.example.com"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

if TYPE_CHECKING:
    from ..worker import Worker

__all__ = [
    "get_allowed_hosts",
    "get_exception_formatter",
    "get_result_formatter",
    "get_worker",
]


def get_worker() -> Worker[Any]:
    """The worker whose queue :data:`streaq.ui.router` shows; override it in your application.

    :raises HTTPException: 412, until the application overrides this dependency
    """
    raise HTTPException(
        412,
        "the streaq UI has no worker: set app.dependency_overrides[get_worker] = lambda: worker "
        "(get_worker from streaq.ui.deps)",
    )


def get_result_formatter() -> Callable[[Any], str]:
    """How the task page shows a task's return value (``repr`` by default)."""
    return repr


def get_exception_formatter() -> Callable[[BaseException], str]:
    """How the task page shows the exception a task failed with (``repr`` by default; the remote
    traceback is shown below it anyway)."""
    return repr


def get_allowed_hosts() -> Sequence[str] | None:
    """The ``Host`` names :data:`streaq.ui.router` answers to (400 otherwise), against DNS
    rebinding; see ``allowed_hosts`` of :func:`streaq.ui.create_router`.

    ``None`` (the default): a request received on a loopback address must name ``localhost``,
    ``127.0.0.1`` or ``[::1]``; other requests are not checked.
    """
    return None
