"""Moving delayed tasks into their streams when they come due.

The scheduler calls the ``promote`` server function, which moves up to 1,000 due tasks and returns
when the next one is due; it then sleeps until that time, or until a wake-up: the ``wake`` channel
announces a delayed task that became the earliest (see :mod:`._listener`), so a task delayed by a
second does not wait for a sleep computed before it was enqueued. The wake event is replaced
*before* ``promote`` runs: a wake-up published while the call is in flight then sets the new event
instead of being lost with the old one. Under a virtual clock (:mod:`streaq.testing`) moving the
clock wakes it too (:func:`~.._clock.wait_until`).
"""

from __future__ import annotations

import anyio

from .._clock import wait_until
from ..utils import now_ms
from ._crashpoints import ARMED, crashpoint
from ._retry import retrying
from ._state import WorkerState

#: delayed tasks moved per call
PROMOTE_BATCH = 1000
#: the longest sleep between two calls (seconds): bounds the effect of a lost wake-up
MAX_SLEEP = 60.0


async def scheduler(state: WorkerState) -> None:
    """Promote due delayed tasks until cancelled."""
    functions = state.client.functions
    while True:
        wake = state.wake = anyio.Event()
        moved, nxt = await retrying(
            state, "cannot move delayed tasks", lambda: functions.promote(now_ms(), PROMOTE_BATCH)
        )
        if ARMED:
            crashpoint("during_promotion", moved > 0)
        if moved >= PROMOTE_BATCH:
            continue
        await wait_until(None if nxt < 0 else nxt, wake, MAX_SLEEP)
