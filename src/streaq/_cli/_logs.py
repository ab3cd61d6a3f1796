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

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object without newlines."""
        moment = datetime.fromtimestamp(record.created, tz=self.tz)
        line: dict[str, Any] = {
            "ts": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
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
