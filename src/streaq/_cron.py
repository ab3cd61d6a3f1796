"""Crontab schedules: validation, next fire times in a time zone, deterministic firing ids.

streaq reads crontab strings as streaq 7.2 does; croniter orders the optional fields differently,
so every expression is translated to croniter's full seven-field order before parsing:

==========================================  ======================================
streaq (7.2) form                           croniter order handed over
==========================================  ======================================
``m h dom mon dow`` (5 fields)              ``m h dom mon dow 0 *``
``m h dom mon dow year`` (6 fields)         ``m h dom mon dow 0 year``
``s m h dom mon dow year`` (7 fields)       ``m h dom mon dow s year``
``@hourly``, ``@daily``/``@midnight``, …    the five-field equivalent, as above
==========================================  ======================================

Times are computed in the schedule's time zone on aware datetimes and returned as epoch
milliseconds. Across a daylight saving change a wall-clock time that does not exist fires at the
first instant after the jump (as cron does); a wall-clock time that occurs twice fires twice only
when the hour field is ``*`` (an hourly job runs every real hour), otherwise once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, tzinfo

from croniter import CroniterBadDateError, CroniterError, croniter

from .types import StreaqError

__all__ = ["CronSchedule", "cron_firing_id", "firing_time_ms"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# croniter's year field ends at 2099; searching the whole range keeps a sparse expression
# (say, one year far ahead) from being reported as "never fires" by croniter's 50-year default.
_MAX_YEARS_BETWEEN = 130

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 100


# croniter reports some malformed fields as plain ValueError/KeyError/IndexError.
_PARSE_ERRORS = (CroniterError, ValueError, KeyError, IndexError)
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second", "year")
_BRACKETED = re.compile(r"\[[^\]]*\]\s*")


def _explain(fields: list[str], exc: Exception) -> str:
    """Name the first field croniter rejects, in streaq's terms rather than croniter's order."""
    for index, field in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = field
        try:
            croniter(" ".join(probe), datetime(1970, 1, 1, tzinfo=UTC))
        except _PARSE_ERRORS as field_exc:
            exc = field_exc
            break
    else:
        return _clean(exc)
    return f"{_FIELD_NAMES[index]} field {field!r}: {_clean(exc)}"


def _clean(exc: Exception) -> str:
    """croniter's message without the (translated) expression it quotes."""
    text = _BRACKETED.sub("", str(exc)).strip(" ,.")
    text = text.removeprefix("is not acceptable").strip(" ,.")
    return text or "not acceptable"


def _to_croniter_fields(tab: str) -> list[str]:
    """Translate a streaq crontab to croniter's seven fields (minute … weekday, second, year).

    :param tab: the crontab as the user wrote it
    :return: the seven fields in croniter's order
    :raises StreaqError: for an unknown alias or a wrong number of fields
    """
    text = tab.strip()
    if text.startswith("@"):
        try:
            text = _ALIASES[text.lower()]
        except KeyError:
            raise StreaqError(f"invalid crontab {tab!r}: unknown alias {text!r}") from None
    fields = text.split()
    if len(fields) == 5:
        return [*fields, "0", "*"]
    if len(fields) == 6:
        return [*fields[:5], "0", fields[5]]
    if len(fields) == 7:
        return [*fields[1:6], fields[0], fields[6]]
    raise StreaqError(f"invalid crontab {tab!r}: expected 5, 6 or 7 fields, got {len(fields)}")


class CronSchedule:
    """A parsed crontab in a time zone.

    :param tab: the crontab: 5 fields (minute hour day month weekday), 6 (those and the year),
        7 (seconds, those five, the year) or an alias such as ``@hourly``
    :param tz: the time zone the fields are read in
    :raises StreaqError: ``invalid crontab '...': reason`` when the expression cannot be parsed
        or can never fire
    """

    __slots__ = ("_expr", "_repeat_folded", "tab", "tz")

    def __init__(self, tab: str, tz: tzinfo = UTC) -> None:
        self.tab = tab
        self.tz = tz
        fields = _to_croniter_fields(tab)
        self._expr = " ".join(fields)
        # A repeated wall-clock hour (DST ending) is a new occurrence only for hour-wildcard jobs.
        self._repeat_folded = fields[1] == "*"
        try:
            probe = croniter(
                self._expr,
                datetime(1970, 1, 1, tzinfo=UTC),
                max_years_between_matches=_MAX_YEARS_BETWEEN,
            )
            probe.get_next(datetime)
        except CroniterBadDateError:
            raise StreaqError(f"invalid crontab {tab!r}: it never fires") from None
        except _PARSE_ERRORS as exc:
            raise StreaqError(f"invalid crontab {tab!r}: {_explain(fields, exc)}") from None

    def __repr__(self) -> str:
        return f"CronSchedule({self.tab!r}, tz={self.tz!r})"

    def _iterator(self, after_ms: int) -> croniter:
        start = datetime.fromtimestamp(after_ms / 1000, tz=self.tz)
        return croniter(self._expr, start, max_years_between_matches=_MAX_YEARS_BETWEEN)

    def _next(self, it: croniter, after_ms: int) -> int | None:
        """Advance ``it`` to the first accepted firing strictly after ``after_ms``."""
        while True:
            try:
                fire = it.get_next(datetime)
            except CroniterBadDateError:
                return None
            fire_ms = round(fire.timestamp() * 1000)
            if fire_ms <= after_ms:
                continue
            if not self._repeat_folded and fire.fold == 1 and _is_ambiguous(fire):
                continue
            return fire_ms

    def next_fire_ms(self, after_ms: int) -> int:
        """The first fire time strictly after ``after_ms``.

        :param after_ms: a moment, in milliseconds since the epoch
        :return: the next fire time, in milliseconds since the epoch
        :raises StreaqError: when the schedule never fires again (its years have passed)
        """
        fire_ms = self._next(self._iterator(after_ms), after_ms)
        if fire_ms is None:
            raise StreaqError(f"crontab {self.tab!r} never fires after {after_ms} ms")
        return fire_ms

    def fires_between(self, start_ms: int, end_ms: int, limit: int = 1000) -> list[int]:
        """The fire times in the interval ``(start_ms, end_ms]``, oldest first.

        :param start_ms: start of the interval (excluded), in epoch milliseconds
        :param end_ms: end of the interval (included), in epoch milliseconds
        :param limit: at most this many fire times are returned (the earliest ones)
        :return: fire times in epoch milliseconds
        """
        fires: list[int] = []
        it = self._iterator(start_ms)
        last = start_ms
        while len(fires) < limit:
            fire_ms = self._next(it, last)
            if fire_ms is None or fire_ms > end_ms:
                break
            fires.append(fire_ms)
            last = fire_ms
        return fires


def _is_ambiguous(moment: datetime) -> bool:
    """Whether ``moment``'s wall-clock time occurs twice in its zone (the hour DST ends)."""
    return moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset()


def cron_firing_id(name: str, fire_ms: int) -> str:
    """The deterministic task id of one firing of a cron job, the same in every worker.

    :param name: the cron job's registered name
    :param fire_ms: the firing's scheduled time, in epoch milliseconds
    :return: ``cron:<name>:<fire_ms>``, e.g. ``cron:cleanup:1700000000000``. A name holding
        characters other than letters, digits, ``.``, ``_`` and ``-`` (or longer than 100
        characters) is sanitised and suffixed with a digest of the original, so ids stay short,
        safe inside Redis keys, and distinct for distinct names
    """
    safe = _UNSAFE.sub("_", name)
    if safe != name or len(name) > _MAX_NAME:
        digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
        safe = f"{safe[: _MAX_NAME - 13]}~{digest}"
    return f"cron:{safe}:{fire_ms}"


def firing_time_ms(task_id: str, name: str) -> int | None:
    """The scheduled time of the firing ``task_id`` of the cron job ``name``, when it is one.

    :param task_id: a task's id
    :param name: the cron job's registered name
    :return: the firing's time (epoch ms), or ``None`` for an id not made by
        :func:`cron_firing_id` for that job (a task enqueued by hand)
    """
    head = cron_firing_id(name, 0)[:-1]
    tail = task_id[len(head) :]
    return int(tail) if task_id.startswith(head) and tail.isdigit() else None
