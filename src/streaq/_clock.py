"""The time the queue reads: the wall clock, or a virtual clock a test moves by hand.

Every moment streaq writes or compares on the queue's schedule -- due times of delayed tasks,
retries' back-off, cron occurrences, expiry deadlines, result timestamps -- comes from
:func:`streaq.utils.now_ms`, which reads the clock of the current context: the wall clock, unless
a :class:`VirtualClock` was installed with :func:`use_clock`. A context variable reaches exactly
the code that runs in that context and every task started from it afterwards, on asyncio and on
trio alike: a test's producer code and every duty of a worker run started inside it read one
clock, and two tests running side by side keep their own.

The duties that sleep until a due time (the scheduler, the cron duty) sleep with
:func:`wait_until`, which a virtual clock cuts short whenever it moves, so moving the clock wakes
them. Durations that are not about the queue's schedule stay in real time: task timeouts, leases
and heartbeats, pauses after Redis errors, result waits, and the TTLs of Redis keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

import anyio


def wall_ms() -> int:
    """The wall-clock time in whole milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class VirtualClock:
    """A clock that stands still until :meth:`advance` moves it.

    :param start: the moment it reads at first (time-zone aware); the current time by default
    :raises ValueError: for a naive ``start``
    """

    __slots__ = ("_ms", "_watchers")

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.utcoffset() is None:
            raise ValueError("the start of a VirtualClock must be time-zone aware")
        self._ms = wall_ms() if start is None else round(start.timestamp() * 1000)
        # the events of the sleepers to wake when the clock moves (see wait_until)
        self._watchers: set[anyio.Event] = set()

    def __repr__(self) -> str:
        return f"<VirtualClock {self.now().isoformat()}>"

    def now_ms(self) -> int:
        """The clock's time in milliseconds since the epoch."""
        return self._ms

    def now(self) -> datetime:
        """The clock's time as an aware UTC ``datetime``."""
        return datetime.fromtimestamp(self._ms / 1000, UTC)

    def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward and wake whatever sleeps on it.

        :param delta: how far, a ``timedelta`` or seconds
        :raises ValueError: for a negative ``delta`` (the clock never goes back)
        """
        if isinstance(delta, timedelta):
            ms = round(delta / timedelta(milliseconds=1))
        else:
            ms = round(delta * 1000)
        if ms < 0:
            raise ValueError(f"a VirtualClock only moves forward, not by {delta!r}")
        self._ms += ms
        watchers, self._watchers = self._watchers, set()
        for event in watchers:
            event.set()


#: the clock of the current context; ``None`` reads the wall clock
CLOCK: ContextVar[VirtualClock | None] = ContextVar("streaq_clock", default=None)


@contextmanager
def use_clock(clock: VirtualClock) -> Iterator[VirtualClock]:
    """Make ``clock`` the time of the current context (and of the tasks it starts) for the block.

    :param clock: the clock to read
    :return: the clock
    """
    token = CLOCK.set(clock)
    try:
        yield clock
    finally:
        CLOCK.reset(token)


async def wait_until(deadline_ms: int | None, wake: anyio.Event, longest: float = math.inf) -> None:
    """Return once the clock reads ``deadline_ms`` (``None``: never), ``wake`` is set, or
    ``longest`` seconds of real time passed; under a virtual clock, also once the clock moves.

    The caller looks at the time again after it returns: an early return is always allowed.
    """
    clock = CLOCK.get()
    if clock is None:
        delay = longest
        if deadline_ms is not None:
            delay = min(longest, max(0.0, (deadline_ms - wall_ms()) / 1000))
        with anyio.move_on_after(delay):
            await wake.wait()
        return
    if deadline_ms is not None and clock.now_ms() >= deadline_ms:
        return
    # the clock sets the caller's own event: one event wakes the sleeper either way
    clock._watchers.add(wake)
    try:
        with anyio.move_on_after(longest):
            await wake.wait()
    finally:
        clock._watchers.discard(wake)
