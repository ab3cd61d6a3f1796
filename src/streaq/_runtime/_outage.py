"""One warning line when a running worker loses Redis, one info line when it is back.

Every duty of a worker (reader, reclaimer, scheduler, finisher, cron, the lease thread, ...)
retries its own Redis calls with its own :class:`~streaq._redis.Backoff`. Logged by each duty on
each retry, a ten-second outage became dozens of warning lines saying the same thing. So the duties
report to the run's one :class:`Outage` instead: the first failure of an outage logs a warning
naming the server and the error, every retry logs only at DEBUG (what failed, the next delay), and
the first successful command afterwards logs how long Redis was away::

    [WARNING] Redis unreachable at 127.0.0.1:6379 (ConnectionError: Error connecting to
              127.0.0.1:6379: Connection refused); retrying with backoff
    [INFO] reconnected to Redis at 127.0.0.1:6379 after 10.2 s

Success is reported after a *command* succeeded, not after a connection opened: right after a
restart a server accepts connections while it still answers ``LOADING``, and calling that a
reconnection would log a second outage a moment later. The lease thread reports too, from its own
event loop, hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import ResponseError

from .._redis._routed import is_wrong_server

__all__ = ["Outage"]

logger = logging.getLogger("streaq")


class Outage:
    """Whether Redis is reachable, as the duties of one worker run see it.

    :param where: the server, for the log lines (``host:port``, or the Sentinel master's name)
    """

    __slots__ = ("_ended", "_lock", "_since", "where")

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._since: float | None = None
        self._ended: float | None = None

    @property
    def down(self) -> bool:
        """Whether an outage is going on (a failure not followed by a success yet)."""
        return self._since is not None

    def calm_for(self) -> float:
        """Seconds since the last outage ended (``inf`` when there was none, 0 during one)."""
        if self._since is not None:
            return 0.0
        if self._ended is None:
            return float("inf")
        return time.monotonic() - self._ended

    def failed(self, error: BaseException, what: str, delay: float | None = None) -> None:
        """A duty's Redis call failed with a recoverable error and will be retried.

        :param error: the error
        :param what: what failed, for the DEBUG line (e.g. ``"cannot read tasks"``)
        :param delay: seconds until the duty retries, when it knows
        """
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            if is_wrong_server(error):
                # READONLY, UNBLOCKED (a demoted master), MASTERDOWN...: reachable but unusable
                problem = f"Redis at {self.where} is not a writable master"
            elif isinstance(error, ResponseError):
                # OOM, BUSY, LOADING...: it answers, and refuses the commands for now
                problem = f"Redis at {self.where} refuses commands for now"
            else:
                problem = f"Redis unreachable at {self.where}"
            logger.warning(
                "%s (%s: %s); retrying with backoff", problem, type(error).__name__, error
            )
        retry = "" if delay is None else f"; retrying in {delay:.1f}s"
        logger.debug("%s (%s)%s", what, error, retry)

    def ok(self) -> None:
        """A duty's Redis call succeeded: ends the outage, if one is going on."""
        if self._since is None:
            # the common case, on every successful call of a duty: no lock, nothing to do
            return
        with self._lock:
            since, self._since = self._since, None
            self._ended = time.monotonic()
        if since is not None:
            logger.info(
                "reconnected to Redis at %s after %.1f s", self.where, time.monotonic() - since
            )
