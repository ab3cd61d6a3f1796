"""Turning SIGINT and SIGTERM into a graceful stop of the run."""

from __future__ import annotations

import logging
import signal

import anyio

from ._state import WorkerState

logger = logging.getLogger("streaq")


async def signals(state: WorkerState) -> None:
    """Request a graceful stop on SIGINT/SIGTERM (only from the main thread)."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        with receiver as received:
            async for signum in received:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                state.request_stop()
    except (ValueError, NotImplementedError, RuntimeError):
        # not the main thread: the embedding application handles signals
        return
