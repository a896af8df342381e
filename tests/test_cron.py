"""Tests for tickrun.cron: fire times, DST rules, catch-up planning and validation.

Every instant is a parameter, so nothing here sleeps or freezes the clock.
"""

import os
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tickrun import cron
from tickrun.cron import CronError, fire_times, next_fire, plan, preview, validate

NEW_YORK = "America/New_York"
LONDON = "Europe/London"


def utc(text: str) -> datetime:
    """'2026-03-08 07:00' read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def every(first: str, last: str, minutes: int) -> list[datetime]:
    """UTC instants from first to last inclusive, `minutes` of real time apart."""
    moment, end, out = utc(first), utc(last), []
    while moment <= end:
        out.append(moment)
        moment += timedelta(minutes=minutes)
    return out


def local_day(tz: str, day: date) -> list[datetime]:
    """Bounds (after, until] covering the whole local calendar day, DST or not."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    return [start - timedelta(microseconds=1), end - timedelta(microseconds=1)]


def walls(instants: list[datetime], tz: str) -> list[str]:
    """Local wall clock with its abbreviation, e.g. '01:30 EDT'."""
    return [t.astimezone(ZoneInfo(tz)).strftime("%H:%M %Z") for t in instants]


# The four DST days of 2026: New York gap 02:00-03:00 EST->EDT on Mar 8 and repeated
# 01:00-02:00 on Nov 1; London gap 01:00-02:00 GMT->BST on Mar 29 and repeated 01:00-02:00
# on Oct 25.
NY_SPRING = (NEW_YORK, date(2026, 3, 8))
NY_FALL = (NEW_YORK, date(2026, 11, 1))
LDN_SPRING = (LONDON, date(2026, 3, 29))
LDN_FALL = (LONDON, date(2026, 10, 25))

DST_DAYS = [
    # Fixed time skipped by the gap: once, at the first instant after the jump.
    (*NY_SPRING, "30 2 * * *", ["2026-03-08 07:00"], ["03:00 EDT"]),
    (*NY_SPRING, "30 1 * * *", ["2026-03-08 06:30"], ["01:30 EST"]),
    # Fixed time repeated by the fall-back: once, at its first occurrence.
    (*NY_FALL, "30 2 * * *", ["2026-11-01 07:30"], ["02:30 EST"]),
    (*NY_FALL, "30 1 * * *", ["2026-11-01 05:30"], ["01:30 EDT"]),
    (*LDN_SPRING, "30 2 * * *", ["2026-03-29 01:30"], ["02:30 BST"]),
    (*LDN_SPRING, "30 1 * * *", ["2026-03-29 01:00"], ["02:00 BST"]),
    (*LDN_FALL, "30 2 * * *", ["2026-10-25 02:30"], ["02:30 GMT"]),
    (*LDN_FALL, "30 1 * * *", ["2026-10-25 00:30"], ["01:30 BST"]),
]


@pytest.mark.parametrize(("tz", "day", "expr", "expected", "wall"), DST_DAYS)
def test_fixed_time_on_dst_days(
    tz: str, day: date, expr: str, expected: list[str], wall: list[str]
) -> None:
    got = fire_times(expr, tz, *local_day(tz, day))
    assert got == [utc(t) for t in expected]
    assert walls(got, tz) == wall


# Wildcard schedules follow real time, so over any local day they fire at evenly spaced UTC
# instants: 23 or 25 hours' worth on DST days.
WILDCARD_DAYS = [
    (*NY_SPRING, "0 * * * *", "2026-03-08 05:00", "2026-03-09 03:00", 60, 23),
    (*NY_SPRING, "*/15 * * * *", "2026-03-08 05:00", "2026-03-09 03:45", 15, 92),
    (*NY_FALL, "0 * * * *", "2026-11-01 04:00", "2026-11-02 04:00", 60, 25),
    (*NY_FALL, "*/15 * * * *", "2026-11-01 04:00", "2026-11-02 04:45", 15, 100),
    (*LDN_SPRING, "0 * * * *", "2026-03-29 00:00", "2026-03-29 22:00", 60, 23),
    (*LDN_SPRING, "*/15 * * * *", "2026-03-29 00:00", "2026-03-29 22:45", 15, 92),
    (*LDN_FALL, "0 * * * *", "2026-10-24 23:00", "2026-10-25 23:00", 60, 25),
    (*LDN_FALL, "*/15 * * * *", "2026-10-24 23:00", "2026-10-25 23:45", 15, 100),
]


@pytest.mark.parametrize(("tz", "day", "expr", "first", "last", "step", "count"), WILDCARD_DAYS)
def test_wildcard_on_dst_days(
    tz: str, day: date, expr: str, first: str, last: str, step: int, count: int
) -> None:
    got = fire_times(expr, tz, *local_day(tz, day))
    assert got == every(first, last, step)
    assert len(got) == count


def test_wildcard_around_the_new_york_transitions() -> None:
    spring = fire_times("*/15 * * * *", NEW_YORK, utc("2026-03-08 06:30"), utc("2026-03-08 07:15"))
    assert walls(spring, NEW_YORK) == ["01:45 EST", "03:00 EDT", "03:15 EDT"]
    fall = fire_times("*/15 * * * *", NEW_YORK, utc("2026-11-01 05:30"), utc("2026-11-01 07:00"))
    assert walls(fall, NEW_YORK) == [
        "01:45 EDT", "01:00 EST", "01:15 EST", "01:30 EST", "01:45 EST", "02:00 EST",
    ]  # fmt: skip
    hourly = fire_times("0 * * * *", NEW_YORK, *local_day(*NY_FALL))
    assert walls(hourly, NEW_YORK)[:4] == ["00:00 EDT", "01:00 EDT", "01:00 EST", "02:00 EST"]


def test_london_repeated_hour_fires_eight_quarter_hours() -> None:
    got = fire_times("*/15 * * * *", LONDON, utc("2026-10-24 23:59"), utc("2026-10-25 01:59"))
    assert len(got) == 8
    assert walls(got, LONDON) == [
        "01:00 BST", "01:15 BST", "01:30 BST", "01:45 BST",
        "01:00 GMT", "01:15 GMT", "01:30 GMT", "01:45 GMT",
    ]  # fmt: skip


# How often each expression fires during New York's repeated 01:00-02:00 (fall) and, for the
# spring, how many firings the whole day has. Fixed = neither minute nor hour starts with '*'.
CLASSIFY = [
    ("0 1 * * *", 1, 1),
    ("0,30 1 * * *", 2, 2),
    ("1-2 2 * * *", 0, 1),  # both skipped wall times collapse into one firing at 03:00 EDT
    ("0 1-3 * * *", 1, 2),  # 02:00 collapses onto the real 03:00 EDT
    ("0 0-23/1 * * *", 1, 23),
    ("*/30 1 * * *", 4, 2),
    ("0 * * * *", 2, 23),
    ("@hourly", 2, 23),
    ("30 */1 * * *", 2, 23),
    ("*/15 2 * * *", 0, 0),  # wildcard: nothing on the spring day, its whole hour is skipped
    # A '*' after the first character does not make a field wildcard (Debian reads only the first).
    ("0 1,*/6 * * *", 1, 5),
    ("0,*/30 1 * * *", 2, 2),
    ("0 2,*/12 * * *", 0, 3),
]


@pytest.mark.parametrize(("expr", "in_repeated_hour", "spring_day"), CLASSIFY)
def test_fixed_versus_wildcard(expr: str, in_repeated_hour: int, spring_day: int) -> None:
    repeated = fire_times(expr, NEW_YORK, utc("2026-11-01 04:59"), utc("2026-11-01 06:59"))
    assert len(repeated) == in_repeated_hour
    if expr.startswith("0,30"):
        assert walls(repeated, NEW_YORK) == ["01:00 EDT", "01:30 EDT"]
    assert len(fire_times(expr, NEW_YORK, *local_day(*NY_SPRING))) == spring_day


@pytest.mark.parametrize(
    ("expr", "day", "wall"),
    [
        # 01:00 fires once, at its first occurrence: not again at 01:00 EST.
        (
            "0 1,*/6 * * *",
            NY_FALL,
            ["00:00 EDT", "01:00 EDT", "06:00 EST", "12:00 EST", "18:00 EST"],
        ),
        # The skipped 02:00 fires once, right after the jump.
        ("0 2,*/12 * * *", NY_SPRING, ["00:00 EST", "03:00 EDT", "12:00 EDT"]),
        ("0,*/30 1 * * *", NY_FALL, ["01:00 EDT", "01:30 EDT"]),
    ],
)
def test_a_star_inside_the_minute_or_hour_field_is_fixed_time(
    expr: str, day: tuple[str, date], wall: list[str]
) -> None:
    assert walls(fire_times(expr, NEW_YORK, *local_day(*day)), NEW_YORK) == wall


def test_two_hourly_does_not_invent_a_firing_after_the_gap() -> None:
    got = fire_times("0 */2 * * *", NEW_YORK, *local_day(*NY_SPRING))
    assert walls(got, NEW_YORK)[:3] == ["00:00 EST", "04:00 EDT", "06:00 EDT"]
    assert len(got) == 11


def test_gap_at_midnight_in_santiago() -> None:
    # Chile springs from 24:00 to 01:00, so midnight of 2026-09-06 never happens there.
    tz = "America/Santiago"
    got = fire_times("@daily", tz, *local_day(tz, date(2026, 9, 6)))
    assert got == [utc("2026-09-06 04:00")]
    assert walls(got, tz) == ["01:00 -03"]


def test_bounds_are_exclusive_then_inclusive() -> None:
    got = fire_times("0 * * * *", "UTC", utc("2026-01-01 00:00"), utc("2026-01-01 03:00"))
    assert got == every("2026-01-01 01:00", "2026-01-01 03:00", 60)


def test_limit_keeps_the_oldest() -> None:
    got = fire_times("0 * * * *", "UTC", utc("2026-01-01 00:00"), utc("2026-01-02 00:00"), 3)
    assert got == every("2026-01-01 01:00", "2026-01-01 03:00", 60)
    assert fire_times("* * * * *", "UTC", utc("2026-01-01 00:00"), utc("2026-01-02"), 0) == []


def test_results_are_utc_whatever_the_input_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    after = utc("2026-03-08 06:00").astimezone(tokyo)
    until = utc("2026-03-08 08:00").astimezone(tokyo)
    got = fire_times("30 2 * * *", NEW_YORK, after, until)
    assert got == [utc("2026-03-08 07:00")]
    assert all(t.tzinfo is UTC for t in got)
    assert next_fire("30 2 * * *", NEW_YORK, after).tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire("* * * * *", "UTC", datetime(2026, 1, 1))


def test_next_fire() -> None:
    assert next_fire("30 2 * * *", NEW_YORK, utc("2026-03-08 06:59")) == utc("2026-03-08 07:00")
    # Strictly after: the firing at 03:00 EDT itself is not next.
    assert next_fire("30 2 * * *", NEW_YORK, utc("2026-03-08 07:00")) == utc("2026-03-09 06:30")
    # Already past 01:30 EDT, the repeated 01:30 EST is not a fire time of a fixed job...
    assert next_fire("30 1 * * *", NEW_YORK, utc("2026-11-01 06:10")) == utc("2026-11-02 06:30")
    # ...but it is one of a wildcard job, even from inside the first pass of the hour.
    assert next_fire("30 * * * *", NEW_YORK, utc("2026-11-01 05:40")) == utc("2026-11-01 06:30")


def test_preview() -> None:
    got = preview("*/15 * * * *", NEW_YORK, utc("2026-03-08 06:20"), 4)
    assert got == every("2026-03-08 06:30", "2026-03-08 07:15", 15)
    assert walls(got, NEW_YORK) == ["01:30 EST", "01:45 EST", "03:00 EDT", "03:15 EDT"]
    assert preview("@yearly", "Europe/Paris", utc("2026-06-01 00:00"), 2) == [
        utc("2026-12-31 23:00"),
        utc("2027-12-31 23:00"),
    ]
    assert preview("* * * * *", "UTC", utc("2026-01-01 00:00"), 0) == []


def test_preview_honours_day_fields() -> None:
    got = preview("0 9 * * mon-fri", LONDON, utc("2026-03-27 12:00"), 2)  # a Friday
    assert got == [utc("2026-03-30 08:00"), utc("2026-03-31 08:00")]  # Mon and Tue, in BST
    assert preview("0 0 L 2 *", "UTC", utc("2027-01-01 00:00"), 2) == [
        utc("2027-02-28 00:00"),
        utc("2028-02-29 00:00"),
    ]


# --- day-of-month and day-of-week --------------------------------------------------------

AFTER_2020 = utc("2020-01-01 00:00")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # Either day field starts with '*': a date must match both (Debian's DOM_STAR/DOW_STAR).
        ("0 0 1 * */2", ["2020-02-01 00:00", "2020-03-01 00:00", "2020-08-01 00:00"]),
        ("0 0 */2 * 1", ["2020-01-13 00:00", "2020-01-27 00:00", "2020-02-03 00:00"]),
        ("1 1 1-7 * */7", ["2020-01-05 01:01", "2020-02-02 01:01", "2020-03-01 01:01"]),
        ("1 1 */100,1-7 * MON", ["2020-01-06 01:01", "2020-02-03 01:01", "2020-03-02 01:01"]),
        # Neither starts with '*': either one suffices, even when a '*' comes later in a field.
        ("0 0 1,15 * 1", ["2020-01-06 00:00", "2020-01-13 00:00", "2020-01-15 00:00"]),
        ("0 0 1,*/10 * 1", ["2020-01-06 00:00", "2020-01-11 00:00", "2020-01-13 00:00"]),
        ("0 0 * * 1", ["2020-01-06 00:00", "2020-01-13 00:00", "2020-01-20 00:00"]),
    ],
)
def test_day_fields_are_anded_when_either_starts_with_a_star(
    expr: str, expected: list[str]
) -> None:
    assert preview(expr, "UTC", AFTER_2020, 3) == [utc(t) for t in expected]
    assert fire_times(expr, "UTC", AFTER_2020, utc(expected[-1])) == [utc(t) for t in expected]
    assert next_fire(expr, "UTC", AFTER_2020) == utc(expected[0])


def test_anded_day_fields_are_counted_like_they_fire() -> None:
    # Mondays that are odd days of the month, 09:00 in New York, over two DST changes.
    expr, last, now = "0 9 */2 * 1", utc("2026-01-01 00:00"), utc("2026-12-01 00:00")
    expected = []
    day = date(2026, 1, 1)
    while day < date(2026, 12, 1):
        if day.day % 2 == 1 and day.weekday() == 0:
            expected.append(datetime.combine(day, datetime.min.time().replace(hour=9)))
        day += timedelta(days=1)
    every_one = fire_times(expr, NEW_YORK, last, now)
    assert [t.astimezone(ZoneInfo(NEW_YORK)).replace(tzinfo=None) for t in every_one] == expected
    assert len(expected) == 24
    assert plan(expr, NEW_YORK, last, now, "latest") == (every_one[-1:], len(expected) - 1)
    assert plan(expr, NEW_YORK, last, now, "none") == ([], len(expected))
    assert plan(expr, NEW_YORK, last, now, "all") == (every_one, 0)


@pytest.mark.parametrize(
    ("expr", "tz", "last"),
    [
        # Sundays on days 1, 4, 7, ...: the 2026 fall-back days of both zones are among them.
        ("*/30 1,*/12 */3 * 0", NEW_YORK, "2026-09-15 00:00"),
        ("0,*/45 1 1-7 * */7", NEW_YORK, "2026-02-15 00:00"),
        ("30 1 */3 * 0", LONDON, "2026-09-15 00:00"),
        # Lord Howe changes by 30 minutes at 02:00 on the first Sundays of April and October.
        ("*/10 1-2 1-7 * */7", "Australia/Lord_Howe", "2026-03-20 00:00"),
    ],
)
def test_plan_counts_anded_days_like_fire_times(expr: str, tz: str, last: str) -> None:
    # _count skips ordinary dates without enumerating them; it must agree over months.
    start = utc(last)
    for days in (35, 90, 200):
        now = start + timedelta(days=days, seconds=4321)
        every_one = fire_times(expr, tz, start, now)
        assert every_one
        assert plan(expr, tz, start, now, "latest") == (every_one[-1:], len(every_one) - 1)
        assert plan(expr, tz, start, now, "none")[1] == len(every_one)


# --- plan ---------------------------------------------------------------------------------

LAST = utc("2026-01-05 00:00")  # an hourly occurrence that was already handled
DOWN_72H = LAST + timedelta(hours=72)  # itself an occurrence


def test_plan_all_after_72_hours() -> None:
    todo, missed = plan("0 * * * *", "UTC", LAST, DOWN_72H, "all")
    assert todo == every("2026-01-05 01:00", "2026-01-08 00:00", 60)
    assert len(todo) == 72
    assert missed == 0


def test_plan_latest_after_72_hours() -> None:
    assert plan("0 * * * *", "UTC", LAST, DOWN_72H, "latest") == ([DOWN_72H], 71)
    later = DOWN_72H + timedelta(minutes=59)
    assert plan("0 * * * *", "UTC", LAST, later, "latest") == ([DOWN_72H], 71)


@pytest.mark.parametrize(
    ("late", "expected"),
    [
        (timedelta(0), ([DOWN_72H], 71)),
        (timedelta(seconds=59), ([DOWN_72H], 71)),
        (timedelta(seconds=90), ([DOWN_72H], 71)),
        (timedelta(seconds=91), ([], 72)),
        (timedelta(minutes=30), ([], 72)),
    ],
)
def test_plan_none_after_72_hours(late: timedelta, expected: tuple[list[datetime], int]) -> None:
    assert plan("0 * * * *", "UTC", LAST, DOWN_72H + late, "none") == expected


def test_plan_none_on_time_runs_miss_nothing() -> None:
    now = utc("2026-01-05 01:00:40")
    assert plan("0 * * * *", "UTC", LAST, now, "none") == ([utc("2026-01-05 01:00")], 0)
    assert plan("0 * * * *", "UTC", utc("2026-01-05 01:00"), now, "none") == ([], 0)


def test_plan_with_nothing_due() -> None:
    for policy in cron.CATCHUP_POLICIES:
        assert plan("0 * * * *", "UTC", LAST, LAST + timedelta(minutes=59), policy) == ([], 0)
        assert plan("0 * * * *", "UTC", LAST, LAST - timedelta(hours=5), policy) == ([], 0)


def test_plan_counts_real_hours_across_fall_back() -> None:
    # 72 real hours spanning New York's repeated hour hold 72 hourly occurrences, 01:00 twice.
    last = utc("2026-10-31 12:00")
    todo, missed = plan("0 * * * *", NEW_YORK, last, last + timedelta(hours=72), "latest")
    assert (todo, missed) == ([last + timedelta(hours=72)], 71)
    assert len(plan("0 * * * *", NEW_YORK, last, last + timedelta(hours=72), "all")[0]) == 72


def test_plan_all_caps_at_1000_and_leaves_the_rest_for_later() -> None:
    last, now = utc("2026-01-01 00:00"), utc("2026-01-03 00:00")  # 2880 minutes
    todo, missed = plan("* * * * *", "UTC", last, now, "all")
    assert len(todo) == cron.CATCHUP_ALL_CAP == 1000
    assert (todo[0], todo[-1], missed) == (last + timedelta(minutes=1), utc("2026-01-01 16:40"), 0)
    runs = []
    while todo:
        runs.append(len(todo))
        todo, missed = plan("* * * * *", "UTC", todo[-1], now, "all")
        assert missed == 0
    assert runs == [1000, 1000, 880]


def test_plan_after_a_year_down_is_exact_and_fast() -> None:
    last, now = utc("2025-06-01 00:00"), utc("2026-06-01 00:00:30")
    started = time.perf_counter()
    latest = plan("* * * * *", NEW_YORK, last, now, "latest")
    none = plan("* * * * *", NEW_YORK, last, now, "none")
    elapsed = time.perf_counter() - started
    assert latest == ([utc("2026-06-01 00:00")], 365 * 24 * 60 - 1)
    assert none == latest  # 30 s late is on time
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("expr", "tz", "last"),
    [
        ("*/7 * * * *", NEW_YORK, "2026-10-30 03:17"),
        ("30 1 * * *", NEW_YORK, "2026-10-20 00:00"),
        ("30 2 * * *", NEW_YORK, "2026-03-01 00:00"),
        ("0,30 0-3 * * *", LONDON, "2026-10-20 12:00"),
        ("*/20 0,1,23 * * *", "America/Santiago", "2026-04-01 00:00"),
        ("0 0 * * *", "America/Santiago", "2026-09-01 00:00"),
        ("*/10 * * * *", "Australia/Lord_Howe", "2026-04-03 00:00"),
        ("45 2 * * *", "Pacific/Chatham", "2026-09-20 00:00"),
    ],
)
def test_plan_missed_count_matches_enumeration(expr: str, tz: str, last: str) -> None:
    start = utc(last)
    for days in (1, 3, 9, 20):
        now = start + timedelta(days=days, seconds=4321)
        every_one = fire_times(expr, tz, start, now)
        todo, missed = plan(expr, tz, start, now, "latest")
        assert todo == every_one[-1:]
        assert missed == len(every_one) - 1


def test_unknown_catchup_policy() -> None:
    with pytest.raises(CronError, match=r"^unknown catch-up policy 'sometimes'"):
        plan("0 * * * *", "UTC", LAST, DOWN_72H, "sometimes")


# --- validate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/15 9-17 * * mon-fri",
        "0 0 1,15 * *",
        "0 0 L * *",
        " 0 0 * * * ",
        "5-1 * * * *",
        "0 0 1 * */2",
        "0 0 29 2 1",  # a Monday the 29th of February: rare (2016, 2044), but it happens
    ]
    + ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "@DAILY"],
)
def test_validate_accepts(expr: str) -> None:
    assert validate(expr, "UTC") is None
    assert validate(expr, NEW_YORK) is None


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        (
            "61 * * * *",
            "UTC",
            "invalid cron expression '61 * * * *': a value is out of range (allowed: minute 0-59,"
            " hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-7)",
        ),
        (
            "0 0 0 * * *",
            "UTC",
            "invalid cron expression '0 0 0 * * *': 6 fields given, but seconds and year fields"
            " are not supported; use the standard 5 (minute hour day-of-month month day-of-week)",
        ),
        (
            "0 0 0 * * * 2026",
            "UTC",
            "invalid cron expression '0 0 0 * * * 2026': 7 fields given, but seconds and year"
            " fields are not supported; use the standard 5 (minute hour day-of-month month"
            " day-of-week)",
        ),
        (
            "* * * *",
            "UTC",
            "invalid cron expression '* * * *': expected 5 fields"
            " (minute hour day-of-month month day-of-week), got 4",
        ),
        (
            "",
            "UTC",
            "invalid cron expression '': it is empty; expected 5 fields"
            " (minute hour day-of-month month day-of-week)",
        ),
        (
            "every day",
            "UTC",
            "invalid cron expression 'every day': expected 5 fields"
            " (minute hour day-of-month month day-of-week), got 2",
        ),
        (
            "@reboot",
            "UTC",
            "invalid cron expression '@reboot': unknown alias, expected one of @hourly, @daily,"
            " @midnight, @weekly, @monthly, @yearly, @annually",
        ),
        (
            "*/0 * * * *",
            "UTC",
            "invalid cron expression '*/0 * * * *': step '0' in field 0 is not acceptable",
        ),
        (
            "1,,2 * * * *",
            "UTC",
            "invalid cron expression '1,,2 * * * *': not a valid cron expression"
            " (minute hour day-of-month month day-of-week)",
        ),
        (
            "0 0 30 2 *",
            "UTC",
            "invalid cron expression '0 0 30 2 *': no date ever matches its day and month fields",
        ),
        (
            "0 0 31 2 */2",
            "UTC",
            "invalid cron expression '0 0 31 2 */2': no date ever matches its day and month fields",
        ),
        (
            "H * * * *",
            "UTC",
            "invalid cron expression 'H * * * *': hashed (H) and random (R) values are not"
            " supported",
        ),
        ("0 0 * * *", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("0 0 * * *", "", "unknown time zone ''"),
        ("0 0 * * *", "america/new_york", "unknown time zone 'america/new_york'"),
        ("0 0 * * *", "localtime", "unknown time zone 'localtime'"),
        ("0 0 * * *", "right/UTC", "unknown time zone 'right/UTC'"),
        ("0 0 * * *", "../../etc/passwd", "unknown time zone '../../etc/passwd'"),
    ],
)
def test_validate_rejects(expr: str, tz: str, message: str) -> None:
    with pytest.raises(CronError) as raised:
        validate(expr, tz)
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


def test_every_entry_point_validates() -> None:
    after = utc("2026-01-01 00:00")
    with pytest.raises(CronError, match="unknown time zone"):
        fire_times("* * * * *", "Nowhere/Special", after, after + timedelta(hours=1))
    with pytest.raises(CronError, match="6 fields"):
        next_fire("0 * * * * *", "UTC", after)
    with pytest.raises(CronError, match="invalid cron expression"):
        preview("nope", "UTC", after, 3)
    with pytest.raises(CronError, match="invalid cron expression"):
        plan("nope", "UTC", after, after, "all")


def test_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)


# --- host time zone ------------------------------------------------------------------------


def _sample() -> list[object]:
    out: list[object] = []
    for tz, day in (NY_SPRING, NY_FALL, LDN_SPRING, LDN_FALL):
        for expr in ("30 2 * * *", "30 1 * * *", "0 * * * *", "*/15 * * * *", "@daily"):
            out.append(fire_times(expr, tz, *local_day(tz, day)))
    out.append(next_fire("30 2 * * *", NEW_YORK, utc("2026-03-08 00:00")))
    out.append(preview("*/15 * * * *", "Asia/Kathmandu", utc("2026-03-08 06:20"), 5))
    out.append(plan("0 * * * *", "UTC", LAST, DOWN_72H + timedelta(seconds=30), "none"))
    out.append(plan("@hourly", LONDON, utc("2026-03-28"), utc("2026-03-30"), "latest"))
    return out


@pytest.mark.parametrize(
    "host_tz", ["Pacific/Chatham", "America/St_Johns", "XYZ+13:37ABC,M3.5.0,M10.5.0"]
)
def test_host_time_zone_is_irrelevant(host_tz: str) -> None:
    saved = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "UTC"
        time.tzset()
        reference = _sample()
        os.environ["TZ"] = host_tz
        time.tzset()
        assert time.localtime(0).tm_gmtoff != 0  # the exotic zone really is in effect
        assert _sample() == reference
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
