"""``streaq run --burst``: progress while the queue drains, a bar on a terminal, else log lines.

A daemon thread reads the queue every :attr:`BurstProgress.TTY_INTERVAL` seconds on a terminal,
every :attr:`BurstProgress.LOG_INTERVAL` seconds otherwise, with its own short-lived event loop and
connection (:meth:`Worker.inspect <streaq.Worker.inspect>`, as ``streaq info`` does), and the
worker's counters; the worker's loop is never touched. A failed read is logged at DEBUG and skipped.

On a terminal the bar shares stderr with the worker's log lines, which must not run into it:
:class:`SharedTerminal` stands in for ``sys.stderr`` while the bar is shown, and every line written
through it (a log record, a warning, a traceback) first erases the bar and then draws it again
below, so the bar always stays the last line. When stderr is not a terminal, the bar would be
noise in a log file: progress becomes a log line whenever it changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TextIO

import anyio

from ..worker import Worker

__all__ = ["BurstProgress", "SharedTerminal", "render_progress"]

logger = logging.getLogger("streaq.cli")

#: back to the start of the line, then erase it (ANSI "erase in line")
ERASE_LINE = "\r\x1b[K"


class SharedTerminal:
    """A terminal stream shared by a progress bar and everything else written to it.

    Writes pass through; while a bar is shown, a write first erases it and, once the text ends a
    line, draws it again. Text that does not end a line (``print`` writes the newline apart)
    leaves the bar off until the line ends. Every other attribute is the stream's.

    :param stream: the terminal (``sys.stderr``)
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._bar = ""
        self._shown = False
        self._at_line_start = True
        self._closed = False

    def write(self, text: str) -> int:
        """Write ``text`` below the bar (see the class docstring)."""
        with self._lock:
            if self._shown:
                self._stream.write(ERASE_LINE)
                self._shown = False
            written = self._stream.write(text)
            if text:
                self._at_line_start = text.endswith("\n")
            self._redraw()
            return written

    def draw(self, bar: str) -> None:
        """Show ``bar`` (one line, no newline) as the last line, replacing the previous one."""
        with self._lock:
            if not self._closed:
                self._bar = bar
                self._redraw()

    def close_bar(self) -> None:
        """Leave the last bar on the screen, on a line of its own, and draw no more."""
        with self._lock:
            if self._shown:
                self._stream.write("\n")
                self._stream.flush()
            self._bar = ""
            self._shown = False
            self._closed = True

    def _redraw(self) -> None:
        if self._bar and self._at_line_start:
            self._stream.write(ERASE_LINE + self._bar)
            self._shown = True
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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
        tty = bool(getattr(stream, "isatty", lambda: False)())
        #: the stream to write everything else to while the bar is shown (``stream`` itself
        #: when it is no terminal)
        self.terminal = SharedTerminal(stream) if tty else None
        self._interval = self.TTY_INTERVAL if tty else self.LOG_INTERVAL
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="streaq-progress", daemon=True)
        self._last = ""

    def start(self) -> None:
        """Start reporting, from a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting, with the final count (ending the bar's line on a terminal)."""
        self._stopped.set()
        self._thread.join(timeout=5)
        # the last periodic report may predate the last tasks: the bar must end on what was done
        self._report()
        if self.terminal is not None:
            self.terminal.close_bar()

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
        if self.terminal is not None:
            self.terminal.draw(line)
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
