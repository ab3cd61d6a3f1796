"""The worker's log output: streaq's text lines or one JSON object per line, at a chosen level.

``streaq run --log-format json`` writes each record as one JSON object on a line of stderr, for
log shippers: ``ts`` (ISO 8601 in the worker's time zone, with milliseconds), ``level``,
``logger``, ``message``, then the task fields a record carries (``task_id``, ``task_name``,
``worker_id``: the worker's task lines set them, see :mod:`streaq._runtime._runner`) and
``exc_info`` (the formatted traceback) when there is one. The text format is
:func:`streaq.utils.default_log_config`'s, whose configuration this module starts from, so both
formats go to the same place with the same filtering.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, tzinfo
from typing import Any

from ..utils import default_log_config

__all__ = ["LEVELS", "TASK_FIELDS", "JsonFormatter", "log_config"]

#: the levels ``--log-level`` accepts
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: record attributes copied into a JSON line when a record has them
TASK_FIELDS = ("task_id", "task_name", "worker_id")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring).

    :param tz: the time zone of ``ts``
    """

    def __init__(self, tz: tzinfo) -> None:
        super().__init__()
        self.tz = tz
        # (second, ISO text of it up to the seconds, the rest: the UTC offset)
        self._cached: tuple[int, str, str] = (-1, "", "")

    def _ts(self, created: float) -> str:
        """``created`` as ISO 8601 with milliseconds, as ``datetime.isoformat`` writes it."""
        # datetime.fromtimestamp's own rounding: to the nearest microsecond, half to even
        second = int(created)
        micro = round((created - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        cached_second, head, offset = self._cached
        if second != cached_second:
            text = datetime.fromtimestamp(second, tz=self.tz).isoformat()
            head, offset = text[:19], text[19:]
            self._cached = (second, head, offset)
        return f"{head}.{micro // 1000:03d}{offset}"

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object without newlines."""
        fields = {name: getattr(record, name, None) for name in TASK_FIELDS}
        exc = self.formatException(record.exc_info) if record.exc_info else None
        message = record.getMessage()
        return self._line(record.created, record.levelname, record.name, message, fields, exc)

    def format_line(
        self, created: float, levelno: int, name: str, message: str, fields: dict[str, str]
    ) -> str | None:
        """The line of a record with these parts and no exception.

        :param created: the record's time (seconds since the epoch)
        :param levelno: its level
        :param name: its logger's name
        :param message: its message, formatted
        :param fields: its task fields (:data:`TASK_FIELDS`)
        :return: the JSON line
        """
        return self._line(created, logging.getLevelName(levelno), name, message, fields, None)

    def _line(
        self,
        created: float,
        level: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exc: str | None,
    ) -> str:
        line: dict[str, Any] = {
            "ts": self._ts(created),
            "level": level,
            "logger": name,
            "message": message,
        }
        for name in TASK_FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value
        if exc is not None:
            line["exc_info"] = exc
        # ensure_ascii keeps every line plain ASCII, whatever the terminal's encoding
        return json.dumps(line, default=str)


def log_config(tz: tzinfo, level: str, *, json_lines: bool = False) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration for the ``streaq`` logger.

    :param tz: the time zone of the timestamps (the worker's ``tz``)
    :param level: one of :data:`LEVELS`
    :param json_lines: one JSON object per line instead of streaq's text lines
    :return: the configuration
    """
    config = default_log_config(tz, verbose=level == "DEBUG")
    config["handlers"]["streaq"]["level"] = level
    config["loggers"]["streaq"]["level"] = level
    if json_lines:
        config["formatters"]["streaq"] = {"()": JsonFormatter, "tz": tz}
    return config
