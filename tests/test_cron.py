"""Crontab parsing as streaq 7.2 reads it, fire times in time zones, and firing ids."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from streaq._cron import CronSchedule, cron_firing_id
from streaq.types import StreaqError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ms(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: tzinfo = UTC,
    fold: int = 0,
) -> int:
    """Epoch milliseconds of a wall-clock time in ``tz``."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold)
    return round(moment.timestamp() * 1000)


def wall(fire_ms: int, tz: tzinfo = UTC) -> datetime:
    return datetime.fromtimestamp(fire_ms / 1000, tz=tz)


def upcoming(tab: str, start: int, count: int, tz: tzinfo = UTC) -> list[datetime]:
    sched = CronSchedule(tab, tz)
    out: list[datetime] = []
    at = start
    for _ in range(count):
        at = sched.next_fire_ms(at)
        out.append(wall(at, tz))
    return out


START = ms(2024, 1, 1)  # a Monday


@pytest.mark.parametrize(
    ("tab", "expected"),
    [
        ("* * * * *", datetime(2024, 1, 1, 0, 1, tzinfo=UTC)),
        ("5 * * * *", datetime(2024, 1, 1, 0, 5, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2024, 1, 1, 0, 15, tzinfo=UTC)),
        ("10-12 3 * * *", datetime(2024, 1, 1, 3, 10, tzinfo=UTC)),
        ("0 4,7 * * *", datetime(2024, 1, 1, 4, tzinfo=UTC)),
        ("0 0 15 * *", datetime(2024, 1, 15, tzinfo=UTC)),
        ("0 0 1 3 *", datetime(2024, 3, 1, tzinfo=UTC)),
        ("0 0 1 mar *", datetime(2024, 3, 1, tzinfo=UTC)),
        ("0 0 * * 3", datetime(2024, 1, 3, tzinfo=UTC)),
        ("0 0 * * fri", datetime(2024, 1, 5, tzinfo=UTC)),
        ("0 0 * * 7", datetime(2024, 1, 7, tzinfo=UTC)),  # 7 is Sunday, like 0
        ("0 12 * * 1-5", datetime(2024, 1, 1, 12, tzinfo=UTC)),
        ("0 0 L * *", datetime(2024, 1, 31, tzinfo=UTC)),
    ],
)
def test_five_field_forms(tab: str, expected: datetime) -> None:
    assert wall(CronSchedule(tab).next_fire_ms(START)) == expected


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", datetime(2024, 1, 1, 1, tzinfo=UTC)),
        ("@daily", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@midnight", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@weekly", datetime(2024, 1, 7, tzinfo=UTC)),
        ("@monthly", datetime(2024, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@HOURLY", datetime(2024, 1, 1, 1, tzinfo=UTC)),
    ],
)
def test_aliases(alias: str, expected: datetime) -> None:
    assert wall(CronSchedule(alias).next_fire_ms(START)) == expected


def test_six_fields_end_with_the_year() -> None:
    assert upcoming("0 0 1 1 * 2030", START, 1) == [datetime(2030, 1, 1, tzinfo=UTC)]
    assert upcoming("30 6 * * * 2026-2027", START, 2) == [
        datetime(2026, 1, 1, 6, 30, tzinfo=UTC),
        datetime(2026, 1, 2, 6, 30, tzinfo=UTC),
    ]


def test_seven_fields_start_with_seconds_and_end_with_the_year() -> None:
    assert upcoming("* * * * * * *", START, 3) == [
        datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC) for s in (1, 2, 3)
    ]
    assert upcoming("*/20 * * * * * *", START, 3) == [
        datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 40, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
    ]
    # seconds=30, minute=15, hour=2, every day of the year 2025
    assert upcoming("30 15 2 * * * 2025", START, 1) == [datetime(2025, 1, 1, 2, 15, 30, tzinfo=UTC)]


def test_next_fire_is_strictly_after() -> None:
    sched = CronSchedule("0 * * * *")
    on_the_hour = ms(2024, 1, 1, 5)
    assert sched.next_fire_ms(on_the_hour) == ms(2024, 1, 1, 6)
    assert sched.next_fire_ms(on_the_hour - 1) == on_the_hour
    every_second = CronSchedule("* * * * * * *")
    assert every_second.next_fire_ms(START + 500) == START + 1000
    assert every_second.next_fire_ms(START + 999) == START + 1000


def test_fires_between_is_half_open_and_limited() -> None:
    sched = CronSchedule("*/10 * * * *")
    start, end = ms(2024, 1, 1, 0), ms(2024, 1, 1, 1)
    fires = sched.fires_between(start, end)
    assert [wall(f).minute for f in fires] == [10, 20, 30, 40, 50, 0]
    assert fires[-1] == end
    assert sched.fires_between(start, end, limit=2) == fires[:2]
    assert sched.fires_between(start, start) == []
    assert sched.fires_between(start, start + 1000) == []


def test_a_schedule_whose_years_have_passed() -> None:
    sched = CronSchedule("0 0 1 1 * 2025")
    assert sched.fires_between(START, ms(2030, 1, 1)) == [ms(2025, 1, 1)]
    assert sched.fires_between(ms(2026, 1, 1), ms(2030, 1, 1)) == []
    with pytest.raises(StreaqError, match="never fires after"):
        sched.next_fire_ms(ms(2026, 1, 1))


@pytest.mark.parametrize(
    ("tab", "reason"),
    [
        ("", "expected 5, 6 or 7 fields, got 0"),
        ("* * * *", "got 4"),
        ("* * * * * * * *", "got 8"),
        ("garbage", "got 1"),
        ("a b c d e", ""),
        ("60 * * * *", "minute field '60': out of range"),
        ("* 24 * * *", "out of range"),
        ("* * 0 * *", "out of range"),
        ("* * 32 * *", "out of range"),
        ("* * * 13 *", "month field '13': out of range"),
        ("* * * * 8", "out of range"),
        ("* * * * * 1969", "year field '1969': out of range"),
        ("60 * * * * * *", "second field '60': out of range"),
        ("*/0 * * * *", ""),
        ("5-2x * * * *", ""),
        ("0 0 31 2 *", "never fires"),
        ("@often", "unknown alias"),
    ],
)
def test_invalid_crontabs(tab: str, reason: str) -> None:
    with pytest.raises(StreaqError, match=rf"^invalid crontab {re.escape(repr(tab))}: .*{reason}"):
        CronSchedule(tab)


def test_attributes() -> None:
    sched = CronSchedule("@daily", BERLIN)
    assert sched.tab == "@daily"
    assert sched.tz is BERLIN
    assert "@daily" in repr(sched)


def test_fields_are_read_in_the_time_zone() -> None:
    assert CronSchedule("0 9 * * *", BERLIN).next_fire_ms(START) == ms(2024, 1, 1, 8)
    assert CronSchedule("0 9 * * *", NEW_YORK).next_fire_ms(START) == ms(2024, 1, 1, 14)
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert CronSchedule("0 0 * * *", fixed).next_fire_ms(START) == ms(2024, 1, 1, 18, 30)


def test_daily_job_across_dst_start_keeps_wall_time() -> None:
    # Europe/Berlin moves from +01:00 to +02:00 on 2024-03-31 at 02:00.
    fires = upcoming("0 9 * * *", ms(2024, 3, 30), 2, BERLIN)
    assert [f.hour for f in fires] == [9, 9]
    assert [f.utcoffset() for f in fires] == [timedelta(hours=1), timedelta(hours=2)]
    # two days of 09:00 are 23 hours apart across the change
    assert fires[1].timestamp() - fires[0].timestamp() == 23 * 3600


def test_nonexistent_wall_time_fires_after_the_jump() -> None:
    fires = upcoming("30 2 * * *", ms(2024, 3, 30, 12), 2, BERLIN)
    assert fires[0] == datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)
    assert fires[1] == datetime(2024, 4, 1, 2, 30, tzinfo=BERLIN)


def test_hourly_job_across_dst_end_runs_every_real_hour() -> None:
    # America/New_York repeats 01:00-02:00 on 2024-11-03.
    start = ms(2024, 11, 3, 0, tz=NEW_YORK)
    end = ms(2024, 11, 3, 4, tz=NEW_YORK)
    fires = CronSchedule("0 * * * *", NEW_YORK).fires_between(start, end)
    assert [b - a for a, b in itertools.pairwise(fires)] == [3_600_000] * 4
    assert [wall(f, NEW_YORK).hour for f in fires] == [1, 1, 2, 3, 4]


def test_fixed_hour_job_across_dst_end_runs_once() -> None:
    start = ms(2024, 11, 2, 12, tz=NEW_YORK)
    end = ms(2024, 11, 4, 12, tz=NEW_YORK)
    fires = CronSchedule("30 1 * * *", NEW_YORK).fires_between(start, end)
    assert fires == [ms(2024, 11, 3, 1, 30, tz=NEW_YORK), ms(2024, 11, 4, 1, 30, tz=NEW_YORK)]


def test_every_second_across_dst_end_is_monotonic() -> None:
    start = ms(2024, 10, 27, 2, 59, 58, tz=BERLIN)  # first 02:59:58, still +02:00
    fires = CronSchedule("* * * * * * *", BERLIN).fires_between(start, start + 5000)
    assert fires == [start + 1000 * i for i in range(1, 6)]


def test_firing_ids_are_deterministic_and_distinct() -> None:
    assert cron_firing_id("cleanup", 1_700_000_000_000) == "cron:cleanup:1700000000000"
    assert cron_firing_id("cleanup", 1) == cron_firing_id("cleanup", 1)
    assert cron_firing_id("cleanup", 1) != cron_firing_id("cleanup", 2)
    assert cron_firing_id("a", 1) != cron_firing_id("b", 1)


def test_firing_ids_are_safe_and_short() -> None:
    odd = [
        "main.<locals>.job",
        "job {x}",
        "job:1",
        "job_1",
        "jöb",
        "x" * 500,
        "x" * 499 + "y",
    ]
    ids = [cron_firing_id(name, 1_700_000_000_000) for name in odd]
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        assert len(task_id) <= 130
        body = task_id.removeprefix("cron:")
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-~:") for ch in body)
        assert body.count(":") == 1
