"""``streaq run --burst``: progress while the queue drains, a bar on a terminal, else log lines.

A daemon thread reads the queue every :attr:`BurstProgress.TTY_INTERVAL` seconds on a terminal,
every :attr:`BurstProgress.LOG_INTERVAL` seconds otherwise, with its own short-lived event loop and
connection (:meth:`Worker.inspect <streaq.Worker.inspect>`, as ``streaq info`` does), and the
worker's counters; the worker's loop is never touched. A failed read is logged at DEBUG and skipped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TextIO

import anyio

from ..worker import Worker

__all__ = ["BurstProgress", "render_progress"]

logger = logging.getLogger("streaq.cli")


class BurstProgress:
    """Progress of ``streaq run --burst``: a bar on a terminal, else a log line on each change.

    "Done" counts tasks this process finished (succeeded, failed or aborted); "left" is what the
    streams still hold, queued, prefetched or running anywhere.

    :param worker: the worker running the burst
    :param stream: where the bar goes (``sys.stderr``); a log line replaces it when not a terminal
    """

    BAR_WIDTH = 30
    TTY_INTERVAL = 0.2
    LOG_INTERVAL = 5.0

    def __init__(self, worker: Worker[Any], stream: TextIO) -> None:
        self._worker = worker
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._interval = self.TTY_INTERVAL if self._tty else self.LOG_INTERVAL
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="streaq-progress", daemon=True)
        self._last = ""

    def start(self) -> None:
        """Start reporting, from a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting (ending the bar's line on a terminal)."""
        self._stopped.set()
        self._thread.join(timeout=5)
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._report()

    def _report(self) -> None:
        try:
            found = anyio.run(self._worker.inspect)
        except Exception as exc:
            logger.debug("cannot read the queue for progress: %s", exc)
            return
        counters = self._worker.counters
        done = counters["completed"] + counters["failed"] + counters["aborted"]
        line = render_progress(
            done, found.queued + found.prefetched + found.running, counters["failed"]
        )
        if self._tty:
            self._stream.write("\r" + line)
            self._stream.flush()
        elif line != self._last:
            logger.info("burst progress: %s", line)
        self._last = line


def render_progress(done: int, left: int, failed: int, width: int = BurstProgress.BAR_WIDTH) -> str:
    """One line of burst progress, e.g. ``[#######.......] 7/14 done, 7 left, 1 unsuccessful``.

    :param done: tasks finished by this process
    :param left: tasks still in the streams
    :param failed: how many of those done failed
    :param width: characters of the bar
    :return: the line, without a newline
    """
    total = done + left
    filled = width if total == 0 else done * width // total
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {done}/{total} done, {left} left, {failed} unsuccessful"
