"""Waiting out Redis trouble: one retry helper for every call of a worker duty, and a supervisor
that keeps each duty serving.

A worker duty never ends the worker because of Redis. A *transient* failure (the server
unreachable or slow, a failover, ``LOADING``, ``OOM``, ``BUSY`` ...: see
:func:`streaq._redis.is_transient`; none of them ran the command) is retried with a backoff by
:func:`retrying`, reported once per outage through the run's :class:`~._outage.Outage`. Anything
else that escapes a duty -- an unexpected error reply, a bug -- is logged with its traceback by
:func:`keep_serving`, which restarts the duty after a backoff: a worker that keeps serving the
tasks it can is better than one that exits and is restarted into the same error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._redis import Backoff, is_transient, retry_transient

if TYPE_CHECKING:
    from ._state import WorkerState

logger = logging.getLogger("streaq")

T = TypeVar("T")

#: a duty that ran at least this long before failing starts its backoff afresh (seconds)
_HEALTHY_RUN = 60.0


async def retrying(state: WorkerState, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` until it succeeds, waiting out transient failures with a backoff.

    :param state: the run, whose outage report the failures go to
    :param what: what is being done, for the log (e.g. ``"cannot record 3 results"``)
    :param call: the Redis call(s), retried unchanged
    :raises Exception: whatever non-transient error ``call`` raises
    """
    result = await retry_transient(
        call, on_retry=lambda error, delay: state.outage.failed(error, what, delay)
    )
    state.outage.ok()
    return result


async def keep_serving(state: WorkerState, name: str, duty: Callable[[], Awaitable[None]]) -> None:
    """Run ``duty`` until it returns; restart it after a backoff whenever it fails.

    :param state: the run
    :param name: the duty's name, for the log
    :param duty: the duty's loop
    """
    backoff = Backoff(initial=0.1, maximum=30.0)
    while True:
        began = time.monotonic()
        try:
            await duty()
            return
        except Exception as e:
            if time.monotonic() - began > _HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            if is_transient(e):
                state.outage.failed(e, f"the {name} stopped", delay)
            else:
                logger.error(
                    "the %s of worker %s failed; restarting it in %.1fs",
                    name,
                    state.worker.id,
                    delay,
                    exc_info=e,
                )
        await anyio.sleep(delay)
