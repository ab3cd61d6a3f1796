"""Small public helpers: importing objects by path, time conversions and the CLI's log setup."""

from __future__ import annotations

import importlib
import logging
import time
from datetime import datetime, timedelta, tzinfo
from typing import Any

from ._clock import CLOCK

__all__ = ["default_log_config", "import_string", "now_ms", "to_ms", "to_seconds"]

LOG_FORMAT = "[%(levelname)s] %(asctime)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def import_string(dotted_path: str) -> Any:
    """Import an object given its path, ``"package.module:name"`` or ``"package.module.name"``.

    After the colon a dotted attribute path is allowed too (``"app.main:container.worker"``).

    :param dotted_path: where the object lives
    :return: the object
    :raises ImportError: with a one-line message saying whether the module could not be found
        or the module lacks the attribute; errors raised by the module's own code while it is
        imported propagate unchanged
    """
    if ":" in dotted_path:
        module_path, _, attr_path = dotted_path.partition(":")
    else:
        module_path, _, attr_path = dotted_path.rpartition(".")
    if not module_path or not attr_path or ":" in attr_path:
        raise ImportError(
            f"{dotted_path!r} is not an import path: expected 'module:attribute' "
            "or 'module.attribute'"
        )
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_path == missing or module_path.startswith(f"{missing}."):
            raise ImportError(
                f"could not import {dotted_path!r}: no module named {missing!r}",
                name=module_path,
            ) from None
        # the module exists, but something it imports does not: say both
        raise ImportError(
            f"could not import {dotted_path!r}: module {module_path!r} failed to import "
            f"{missing!r} ({exc})",
            name=module_path,
        ) from exc
    obj: Any = module
    walked = module_path
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(
                f"could not import {dotted_path!r}: {walked!r} has no attribute {part!r}",
                name=module_path,
            ) from None
        walked = f"{walked}{'.' if walked != module_path else ':'}{part}"
    return obj


def to_seconds(value: timedelta | int | float | None) -> float | None:
    """A duration in seconds.

    :param value: a ``timedelta`` or a number of seconds; ``None`` stays ``None``
    :return: the duration in seconds, as a float
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def to_ms(value: timedelta | int | float | None) -> int | None:
    """A duration in whole milliseconds.

    :param value: a ``timedelta`` or a number of **seconds**; ``None`` stays ``None``
    :return: the duration in milliseconds, rounded to the nearest millisecond
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return round(value / timedelta(milliseconds=1))
    return round(value * 1000)


def now_ms() -> int:
    """The current time in milliseconds since the epoch.

    :return: wall-clock time (``time.time_ns()``) in whole milliseconds; under a virtual clock
        (:mod:`streaq.testing`), that clock's time
    """
    clock = CLOCK.get()
    return time.time_ns() // 1_000_000 if clock is None else clock.now_ms()


class _TimezoneFormatter(logging.Formatter):
    """A formatter that renders ``asctime`` in a given time zone rather than the host's.

    ``format_line`` formats a worker's task line without a record (see
    :mod:`streaq._runtime._tasklog`), exactly as :meth:`format` would a record of it.
    """

    def __init__(self, fmt: str, datefmt: str, tz: tzinfo) -> None:
        super().__init__(fmt=fmt, datefmt=datefmt)
        self.tz = tz
        # a worker logs two lines per task: render each second's timestamp once
        self._cached: tuple[int, str | None, str] = (-1, None, "")
        # the start of format_line's lines, for one second and level
        self._prefix_second, self._prefix_level, self._prefix = -1, 0, ""

    #: format_line does not need a line's task fields
    wants_fields = False

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, datefmt)

    def _time(self, created: float, datefmt: str | None) -> str:
        second = int(created)
        cached_second, cached_fmt, text = self._cached
        if second != cached_second or datefmt != cached_fmt:
            moment = datetime.fromtimestamp(second, tz=self.tz)
            text = moment.strftime(datefmt or LOG_DATE_FORMAT)
            self._cached = (second, datefmt, text)
        return text

    def format_line(
        self, created: float, levelno: int, name: str, message: str, fields: dict[str, str]
    ) -> str | None:
        """The line of a record with these parts and no exception.

        :param created: the record's time (seconds since the epoch)
        :param levelno: its level
        :param name: its logger's name (not part of the text format)
        :param message: its message, formatted
        :param fields: its extra attributes (not part of the text format)
        :return: the line, or ``None`` when this formatter has another format than streaq's
        """
        if self._fmt != LOG_FORMAT:
            return None
        second = int(created)
        if second != self._prefix_second or levelno != self._prefix_level:
            level = logging.getLevelName(levelno)
            self._prefix = f"[{level}] {self._time(created, self.datefmt)}: "
            self._prefix_second, self._prefix_level = second, levelno
        return self._prefix + message


def default_log_config(tz: tzinfo, verbose: bool) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration for the ``"streaq"`` logger.

    Lines look like ``[INFO] 2024-01-01 12:00:00: message``, with the time in ``tz``, and go
    to stderr.

    :param tz: the time zone of the timestamps (usually the worker's ``tz``)
    :param verbose: log at DEBUG level instead of INFO
    :return: the configuration dictionary
    """
    level = "DEBUG" if verbose else "INFO"
    return {
        "version": 1,
        # the application's own loggers must keep working after the CLI configures streaq's
        "disable_existing_loggers": False,
        "formatters": {
            "streaq": {
                "()": _TimezoneFormatter,
                "fmt": LOG_FORMAT,
                "datefmt": LOG_DATE_FORMAT,
                "tz": tz,
            }
        },
        "handlers": {
            "streaq": {
                "class": "logging.StreamHandler",
                "formatter": "streaq",
                "level": level,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # no propagation: a root handler set up elsewhere would print every line twice
            "streaq": {"handlers": ["streaq"], "level": level, "propagate": False}
        },
    }
