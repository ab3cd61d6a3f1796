"""``streaq run --workers N``: a supervisor keeping N worker processes alive.

The supervisor never imports the worker; it starts N children (``python -m streaq run
module:worker --workers 1 …``), forwards SIGINT/SIGTERM to them, restarts a child that crashes
(capped exponential backoff, afresh once a child ran for :data:`STABLE_AFTER` seconds) and gives
up when a child keeps failing right after it starts (a bad import path, say): after
:data:`MAX_STARTUP_FAILURES` exits within :data:`STARTUP_WINDOW` seconds of starting in a row, it
stops the others and exits with status 1. It exits with 0 when every child ended with 0 (a burst
run, or a signal).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass
from types import FrameType

from ._children import SignalForwarding, describe_exit, send, spawn

__all__ = ["Supervisor"]

logger = logging.getLogger("streaq.cli")

#: a child exiting with an error this soon after starting counts as failing at start: generous,
#: since on a loaded host merely importing the app can take seconds, and a child that fails at
#: import must be recognised as such every time or the supervisor retries it forever
STARTUP_WINDOW = 10.0
#: give up after this many consecutive failures at start of one child
MAX_STARTUP_FAILURES = 3
#: a child that ran this long before crashing starts its backoff afresh
STABLE_AFTER = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
_POLL_INTERVAL = 0.05


@dataclass
class _Slot:
    """One of the supervisor's N worker processes, across its restarts."""

    index: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    startup_failures: int = 0
    restart_at: float | None = None
    final_code: int | None = None


class Supervisor:
    """Run worker commands (one per slot) until they exit or a signal stops them.

    :param commands: the command line of each worker process
    """

    def __init__(self, commands: list[list[str]]) -> None:
        self._slots = [_Slot(index, command) for index, command in enumerate(commands, start=1)]
        self._stopping = False
        self._gave_up = False

    def run(self) -> int:
        """Supervise until every child has ended for good.

        :return: the exit status: 0 when every child ended with 0, else 1
        """
        with SignalForwarding(self._on_signal):
            for slot in self._slots:
                self._start(slot)
            logger.info("supervising %d worker processes", len(self._slots))
            while not all(slot.final_code is not None for slot in self._slots):
                now = time.monotonic()
                for slot in self._slots:
                    if slot.process is not None and (code := slot.process.poll()) is not None:
                        self._exited(slot, code, now)
                    if slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot)
                time.sleep(_POLL_INTERVAL)
        if self._gave_up or any(slot.final_code != 0 for slot in self._slots):
            return 1
        return 0

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started_at = time.monotonic()
        slot.process = spawn(slot.command)
        logger.debug("worker process %d started (pid %d)", slot.index, slot.process.pid)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        slot.process = None
        lived = now - slot.started_at
        if code == 0 or self._stopping:
            slot.final_code = code
            return
        slot.startup_failures = slot.startup_failures + 1 if lived < STARTUP_WINDOW else 0
        slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
        if slot.startup_failures >= MAX_STARTUP_FAILURES:
            slot.final_code = code
            self._give_up(
                f"worker process {slot.index} exited with {describe_exit(code)} right after "
                f"starting, {slot.startup_failures} times in a row (its error is above); giving up"
            )
            return
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (slot.failures - 1))
        logger.warning(
            "worker process %d exited with %s after %.1f s; restarting it in %.1f s",
            slot.index,
            describe_exit(code),
            lived,
            delay,
        )
        slot.restart_at = now + delay

    def _give_up(self, reason: str) -> None:
        logger.error("%s", reason)
        self._gave_up = True
        self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        for slot in self._slots:
            if slot.process is not None:
                send(slot.process, signum)
            elif slot.final_code is None:
                # waiting for a restart: there is nothing to stop, the slot is simply done
                slot.restart_at = None
                slot.final_code = 0 if slot.failures == 0 else 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, stopping worker processes", signal.Signals(signum).name)
        self._stop(signum)
