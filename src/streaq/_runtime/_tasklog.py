"""The per-task log lines of a worker run, written in batches.

A worker logs two lines per task (started ``□``, finished ``■``), more for retries and failures.
Through :mod:`logging` one line costs a :class:`logging.LogRecord`, a caller lookup, a handler
lock and a write: about as much CPU as running a no-op task. So the runner does not log task lines
itself; it :meth:`TaskLog.add`\\ s them -- only when the level is on, so nothing is built, let alone
formatted, for a level that is off -- with their time, and the finisher :meth:`TaskLog.flush`\\ es
them once per batch, before it records the batch's outcomes (a caller that sees a result finds
its lines logged already). The lines keep their order and their timestamps; they appear at most
one finisher round later.

A flush takes one of two paths:

* **Fast**: the ``streaq`` logger has streaq's own output only (what ``streaq run`` and
  :func:`streaq.utils.default_log_config` set up: one plain :class:`logging.StreamHandler` whose
  formatter has a ``format_line`` method, no filters, no propagation). Every line is formatted
  straight from its parts, no record is made, and the batch is one write and one flush.
* **Records**: anything else (an application's handlers, ``caplog``): one ordinary record per line,
  handled by the logger as :meth:`logging.Logger.info` would, with the line's time and the task
  fields (``task_id``, ``task_name``, ``worker_id``) as attributes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._state import Job

__all__ = ["LineFormatter", "TaskLog"]

#: (time, level, message template, its arguments, the task, exception)
Entry = tuple[float, int, str, tuple[Any, ...], "Job", BaseException | None]


class LineFormatter(Protocol):
    """A formatter that can format a line without a record (see the module docstring)."""

    def format_line(
        self, created: float, levelno: int, name: str, message: str, fields: dict[str, str]
    ) -> str | None:
        """The formatted line, or ``None`` when this formatter needs a record for it."""


class TaskLog:
    """Task lines waiting for the next flush.

    :param logger: where the lines go
    :param worker_id: the worker's id, a field of every line
    """

    def __init__(self, logger: logging.Logger, worker_id: str) -> None:
        self.logger = logger
        self.worker_id = worker_id
        self.entries: list[Entry] = []
        #: adds an entry whose level its caller found on (:attr:`info`): the hot path of the
        #: lines logged for every task, without a call of :meth:`add`
        self.append = self.entries.append
        #: whether INFO lines are on, as of the last flush: the per-task lines check this
        #: instead of asking the logger twice per task
        self.info = logger.isEnabledFor(logging.INFO)

    def enabled(self, level: int) -> bool:
        """Whether lines at ``level`` are logged at all (nothing else should be built if not)."""
        return (self.info and level >= logging.INFO) or self.logger.isEnabledFor(level)

    def add(
        self,
        level: int,
        job: Job,
        msg: str,
        *args: Any,
        exc: BaseException | None = None,
    ) -> None:
        """Log a line about ``job`` at the next flush, if ``level`` is on.

        :param level: the line's level
        :param job: the task it is about
        :param msg: the ``%`` template of the message
        :param args: its arguments, formatted only if the line is written
        :param exc: an exception whose traceback follows the line
        """
        if (self.info and level >= logging.INFO) or self.logger.isEnabledFor(level):
            self.entries.append((time.time(), level, msg, args, job, exc))

    def _fields(self, job: Job) -> dict[str, str]:
        """The task fields of a line about ``job`` (``streaq run --log-format json``)."""
        return {"task_id": job.task_id, "task_name": job.fn_name, "worker_id": self.worker_id}

    def flush(self) -> None:
        """Write the lines added since the last flush, in order."""
        logger = self.logger
        self.info = info = logger.isEnabledFor(logging.INFO)
        if not self.entries:
            return
        # the same list stays: ``append`` is bound to it
        entries = self.entries.copy()
        self.entries.clear()
        # a level turned off since a line was added: the line is dropped here
        if not info or any(entry[1] < logging.INFO for entry in entries):
            entries = [entry for entry in entries if logger.isEnabledFor(entry[1])]
        fast = self._fast_output()
        if fast is None:
            for entry in entries:
                logger.handle(self._record(entry))
            return
        handler, format_line = fast
        name, threshold = logger.name, handler.level
        fields: dict[str, str] = {}
        wants_fields = getattr(handler.formatter, "wants_fields", True)
        lines: list[str] = []
        for entry in entries:
            created, level, msg, args, job, exc = entry
            if level < threshold:
                continue
            if exc is None:
                if wants_fields:
                    fields = self._fields(job)
                line = format_line(created, level, name, msg % args if args else msg, fields)
                if line is not None:
                    lines.append(line)
                    continue
            # a traceback (or a format only a record can fill): written by the handler itself,
            # after the lines before it
            self._write(handler, lines)
            lines = []
            handler.handle(self._record(entry))
        self._write(handler, lines)

    def _fast_output(self) -> tuple[logging.StreamHandler[Any], Any] | None:
        """The handler and its ``format_line`` when the fast path applies, else ``None``."""
        logger = self.logger
        if logger.propagate or logger.filters or logger.disabled or len(logger.handlers) != 1:
            return None
        handler = logger.handlers[0]
        if type(handler) is not logging.StreamHandler or handler.filters:
            return None
        format_line = getattr(handler.formatter, "format_line", None)
        return None if format_line is None else (handler, format_line)

    def _write(self, handler: logging.StreamHandler[Any], lines: list[str]) -> None:
        if not lines:
            return
        end = handler.terminator
        handler.acquire()
        try:
            handler.stream.write(end.join(lines) + end)
            handler.flush()
        except Exception:
            # what logging does when a handler fails: report it on stderr and go on
            record = logging.makeLogRecord({"name": self.logger.name, "msg": lines[0]})
            handler.handleError(record)
        finally:
            handler.release()

    def _record(self, entry: Entry) -> logging.LogRecord:
        created, level, msg, args, job, exc = entry
        exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
        record = self.logger.makeRecord(
            self.logger.name, level, __file__, 0, msg, args, exc_info, "run", self._fields(job)
        )
        # the line's own time, not the flush's
        record.relativeCreated -= (record.created - created) * 1000
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        return record
