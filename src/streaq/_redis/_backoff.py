"""Exponential backoff with jitter, for reconnect loops.

Theory of operation
-------------------
A :class:`Backoff` is a small mutable counter: each :meth:`Backoff.next` returns the current delay
with up to ``jitter`` (a fraction) randomly added or removed, then multiplies the base delay by
``factor`` up to ``maximum``. :meth:`Backoff.reset` goes back to ``initial`` once an attempt
succeeded. Jitter spreads the reconnects of many clients after a server restart, so they do not
all arrive in the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._errors import is_transient

__all__ = ["Backoff", "retry_transient"]

T = TypeVar("T")


class Backoff:
    """Exponential backoff state.

    :param initial: first delay in seconds.
    :param maximum: cap for the delay in seconds.
    :param factor: growth factor per attempt.
    :param jitter: fraction of the delay added or removed at random (0.1 = ±10 %).
    :raises ValueError: for a negative delay, a factor below 1 or a jitter outside ``[0, 1]``.
    """

    __slots__ = ("_current", "factor", "initial", "jitter", "maximum")

    def __init__(
        self, initial: float = 0.05, maximum: float = 5.0, factor: float = 2.0, jitter: float = 0.1
    ) -> None:
        if initial < 0 or maximum < initial:
            raise ValueError("need 0 <= initial <= maximum")
        if factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._current = initial

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, maximum={self.maximum}, factor={self.factor}, "
            f"jitter={self.jitter}, current={self._current})"
        )

    def next(self) -> float:
        """Advance to the next attempt.

        :return: the delay to wait before this attempt, in seconds.
        """
        delay = self._current
        self._current = min(self._current * self.factor, self.maximum)
        spread = delay * self.jitter
        return max(0.0, delay + random.uniform(-spread, spread))

    def reset(self) -> None:
        """Start over from ``initial`` (call after a successful attempt)."""
        self._current = self.initial

    async def sleep(self) -> None:
        """Sleep for :meth:`next` seconds."""
        await anyio.sleep(self.next())


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    on_retry: Callable[[Exception, float], None] | None = None,
    backoff: Backoff | None = None,
    transient: Callable[[Exception], bool] = is_transient,
) -> T:
    """Run ``call`` until it succeeds, waiting out transient failures.

    :param call: the command(s), repeated unchanged (a transient failure ran nothing)
    :param on_retry: told of each failure and the delay before the next attempt
    :param backoff: the delays (default :class:`Backoff()`)
    :param transient: which failures to wait out (default :func:`is_transient`)
    :return: what ``call`` returned
    :raises Exception: the first failure that is not transient
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return await call()
        except Exception as e:
            if not transient(e):
                raise
            delay = backoff.next()
            if on_retry is not None:
                on_retry(e, delay)
            await anyio.sleep(delay)
