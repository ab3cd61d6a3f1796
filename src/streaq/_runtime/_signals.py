"""Turning SIGINT and SIGTERM into a graceful stop of the run."""

from __future__ import annotations

import logging
import signal

import anyio
import anyio.abc

from ._state import WorkerState

logger = logging.getLogger("streaq")


async def signals(
    state: WorkerState, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Request a graceful stop on SIGINT/SIGTERM (only from the main thread).

    Reports ``started`` once the handlers are installed: a worker that says it has started must
    not be killed by a SIGTERM that comes right after.
    """
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        with receiver as received:
            task_status.started()
            async for signum in received:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                state.request_stop()
    except (ValueError, NotImplementedError, RuntimeError):
        # not the main thread: the embedding application handles signals
        task_status.started()
