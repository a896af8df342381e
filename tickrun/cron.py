"""When a cron schedule fires, and what a tick must enqueue for it.

Pure: every "now" is a parameter; the only outside input is the time zone database.
Expressions are read on the wall clock of the schedule's IANA zone, never the host's, and every
instant returned is an aware UTC datetime.

Daylight saving follows Debian cron. A schedule is *wildcard* when its minute or hour field
starts with ``*`` (after expanding an @-alias: ``*``, ``*/15``, ``0 *``, ``30 */2``,
``*/5 9-17``, ``@hourly``) and *fixed-time* otherwise (``30 2``, ``0,30 1-3``, ``0 0-23/2``,
``0 1,*/6``, ``0,*/30 1``, ``@daily``): a ``*`` later in the field does not count.

* A wildcard schedule follows real time: it fires at every instant whose wall clock matches, so
  not at all for wall times a spring-forward gap skips, and twice for wall times a fall-back
  repeats.
* A fixed-time schedule fires once per matching wall time: at its first occurrence when it is
  repeated, and at the first instant after the gap when it is skipped (wall times skipped by one
  gap all become that one firing).

The day fields also follow Debian cron: when the day-of-month or the day-of-week field starts
with ``*`` (``*``, ``*/2``, ``*/100,1-7``), a date must match both; otherwise either suffices.
So ``0 0 1,15 * 1`` fires on the 1st, the 15th and every Monday, but ``0 0 1 * */2`` only on a
1st that falls on an even weekday.

croniter is used only on naive wall-clock datetimes, to parse and to find matching dates: its own
DST handling fires fixed-time jobs twice in a fall-back hour and turns a skipped ``0 */2`` into an
off-schedule 03:00, so the mapping from wall clock to UTC is done here with zoneinfo.
"""

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from itertools import islice, takewhile
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter

CATCHUP_POLICIES = ("all", "latest", "none")
CATCHUP_ALL_CAP = 1000
# A run started by cron every minute is at most ~60 s late, with slack for a slow start.
ON_TIME_GRACE = timedelta(seconds=90)

_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS = "minute hour day-of-month month day-of-week"
_RANGES = "minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-7"
_CRONITER_PREFIX = re.compile(r"^\[[^\]]*\]\s*(is not acceptable)?[\s,.]*")
_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)


class CronError(ValueError):
    """A schedule's expression, time zone or catch-up policy is unusable; the message is one
    sentence meant for the user."""


@dataclass(frozen=True)
class _Spec:
    times: tuple[time, ...]  # every matching wall time of day, ascending
    days: str  # the date fields as a croniter expression that fires at midnight
    day_or: bool  # whether a date needs to match only one of the two day fields
    fixed: bool
    zone: ZoneInfo


def validate(expr: str, tz: str) -> None:
    """Raise CronError unless ``expr`` is a usable 5-field expression and ``tz`` an IANA zone."""
    _spec(expr, tz)


def fire_times(
    expr: str, tz: str, after: datetime, until: datetime, limit: int | None = None
) -> list[datetime]:
    """Fire times in (after, until], oldest first, at most ``limit`` of them (the oldest)."""
    spec = _spec(expr, tz)
    fires = _fires(spec, _aware(after, "after"))
    end = _aware(until, "until")
    count = None if limit is None else max(limit, 0)
    return list(takewhile(lambda t: t <= end, islice(fires, count)))


def next_fire(expr: str, tz: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``."""
    found = next(_fires(_spec(expr, tz), _aware(after, "after")), None)
    if found is None:
        raise CronError(f"cron expression {expr!r} never fires after {after.isoformat()}")
    return found


def preview(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times after ``after``."""
    return list(islice(_fires(_spec(expr, tz), _aware(after, "after")), max(n, 0)))


def plan(
    expr: str, tz: str, last: datetime, now: datetime, catchup: str
) -> tuple[list[datetime], int]:
    """What a run at ``now`` enqueues for a schedule whose occurrences up to ``last`` are done.

    Returns the occurrences to enqueue (oldest first) and how many occurrences in (last, now]
    are dropped as missed:

    * ``all``: every occurrence, at most CATCHUP_ALL_CAP (the oldest); none are missed, because
      the caller advances ``last`` only to the last one returned and the rest come next run.
    * ``latest``: the most recent occurrence; the older ones are missed.
    * ``none``: the most recent occurrence only if ``now`` is within ON_TIME_GRACE of it; every
      other occurrence is missed.
    """
    if catchup not in CATCHUP_POLICIES:
        raise CronError(f"unknown catch-up policy {catchup!r}: use 'all', 'latest' or 'none'")
    spec = _spec(expr, tz)
    start, end = _aware(last, "last"), _aware(now, "now")
    if catchup == "all":
        return fire_times(expr, tz, start, end, CATCHUP_ALL_CAP), 0
    newest = _newest(spec, start, end)
    if newest is None:
        return [], 0
    older = _count(spec, start, end) - 1
    if catchup == "latest" or end - newest <= ON_TIME_GRACE:
        return [newest], older
    return [], older + 1


@lru_cache(maxsize=1024)
def _spec(expr: str, tz: str) -> _Spec:
    minutes, hours, days, day_or, fixed = _parse(expr)
    return _Spec(
        times=tuple(time(h, m) for h in hours for m in minutes),
        days=days,
        day_or=day_or,
        fixed=fixed,
        zone=_zone(tz),
    )


def _parse(expr: str) -> tuple[list[int], list[int], str, bool, bool]:
    def invalid(reason: str) -> CronError:
        return CronError(f"invalid cron expression {expr!r}: {reason}")

    text = expr.strip()
    if not text.isascii():
        raise invalid("it contains non-ASCII characters")
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            raise invalid(f"unknown alias, expected one of {', '.join(_ALIASES)}")
        text = _ALIASES[text.lower()]
    fields = text.split()
    if len(fields) in (6, 7):
        raise invalid(
            f"{len(fields)} fields given, but seconds and year fields are not supported;"
            f" use the standard 5 ({_FIELDS})"
        )
    if not fields:
        raise invalid(f"it is empty; expected 5 fields ({_FIELDS})")
    if len(fields) != 5:
        raise invalid(f"expected 5 fields ({_FIELDS}), got {len(fields)}")
    # croniter's H and R pick values from a hash id or at random; neither suits a pure schedule.
    if any(part[:1].lower() in ("h", "r") for field in fields for part in field.split(",")):
        raise invalid("hashed (H) and random (R) values are not supported")
    # Debian cron tests the first character only (its DOM_STAR/DOW_STAR and MIN_STAR/HR_STAR
    # flags), so "*/2" counts as a star and "1,*/2" does not; croniter's own day rule differs.
    day_or = not fields[2].startswith("*") and not fields[4].startswith("*")
    fixed = not fields[0].startswith("*") and not fields[1].startswith("*")
    try:
        expanded, _ = croniter.expand(text)
        days = "0 0 " + " ".join(fields[2:])
        # The same day rule as _dates, so that day fields that can never both match are refused.
        croniter(days, datetime(2000, 1, 1), day_or=day_or).get_next(datetime)
    except CroniterBadDateError:
        raise invalid("no date ever matches its day and month fields") from None
    except (CroniterError, ValueError) as exc:
        raise invalid(_croniter_reason(exc)) from None
    minutes = list(range(60)) if expanded[0] == ["*"] else [int(m) for m in expanded[0]]
    hours = list(range(24)) if expanded[1] == ["*"] else [int(h) for h in expanded[1]]
    return sorted(minutes), sorted(hours), days, day_or, fixed


def _croniter_reason(exc: Exception) -> str:
    # croniter prefixes "[expr] is not acceptable", and wraps unexpected errors in a traceback.
    lines = str(exc).strip().splitlines()
    reason = _CRONITER_PREFIX.sub("", lines[0]) if len(lines) == 1 else ""
    if reason == "out of range":
        return f"a value is out of range (allowed: {_RANGES})"
    return reason or f"not a valid cron expression ({_FIELDS})"


def _zone(tz: str) -> ZoneInfo:
    # "localtime" is the host's zone under another name; the set also excludes right/ and posix/.
    if tz == "localtime" or tz not in _known_zones():
        raise CronError(f"unknown time zone {tz!r}")
    return ZoneInfo(tz)


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _aware(moment: datetime, name: str) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _dates(spec: _Spec, first: date) -> Iterator[date]:
    """Dates from ``first`` on that match the day and month fields."""
    # Naive on purpose: croniter then counts plain calendar days, with no DST logic involved.
    start = datetime.combine(first, time()) - timedelta(minutes=1)
    it = croniter(spec.days, start, day_or=spec.day_or)
    while True:
        try:
            yield it.get_next(datetime).date()
        except CroniterBadDateError:  # no match within croniter's 50-year horizon
            return


def _instants(spec: _Spec, wall: datetime) -> list[datetime]:
    """The UTC instants at which the naive local ``wall`` fires, ascending (zero, one or two)."""
    early = wall.replace(tzinfo=spec.zone)
    late = early.replace(fold=1)
    first = early.astimezone(UTC)
    if early.utcoffset() == late.utcoffset():
        return [first]
    second = late.astimezone(UTC)
    if first.astimezone(spec.zone).replace(tzinfo=None) == wall:  # repeated by a fall-back
        return [first] if spec.fixed else [first, second]
    # Skipped by a gap. fold=0 read it with the offset from before the gap, which puts it after
    # the transition, and fold=1 with the offset after, which puts it before.
    return [_transition(spec.zone, second, first)] if spec.fixed else []


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] where the UTC offset changes; tzdata uses whole seconds."""
    low, high = int(before.timestamp()), int(after.timestamp())
    target = after.astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _fires(spec: _Spec, after: datetime) -> Iterator[datetime]:
    """Every fire time strictly after ``after``, ascending."""
    local = after.astimezone(spec.zone)
    start = local.replace(tzinfo=None)
    offset, repeat_offset = local.utcoffset(), local.replace(fold=1).utcoffset()
    if local.fold == 0 and offset is not None and repeat_offset is not None:
        # In the first pass of a repeated hour, earlier wall times still fire in the second.
        start -= offset - repeat_offset
    # Wall order is instant order except in a repeated hour, where a wildcard schedule's second
    # pass interleaves with its first; the heap holds instants until no later wall can precede
    # them, since the earliest instant of each wall time never decreases.
    pending: list[datetime] = []
    previous = after
    for day in _dates(spec, start.date()):
        for of_day in spec.times:
            wall = datetime.combine(day, of_day)
            if wall < start:
                continue
            instants = _instants(spec, wall)
            if not instants:
                continue
            while pending and pending[0] <= instants[0]:
                moment = heapq.heappop(pending)
                if moment > previous:  # skips instants before `after` and collapsed duplicates
                    yield moment
                    previous = moment
            for moment in instants:
                heapq.heappush(pending, moment)
    for moment in sorted(pending):
        if moment > previous:
            yield moment
            previous = moment


def _newest(spec: _Spec, after: datetime, until: datetime) -> datetime | None:
    """The latest fire time in (after, until], looking back in growing windows."""
    window = _HOUR
    while True:
        start = max(after, until - window)
        found = None
        for moment in takewhile(lambda t: t <= until, _fires(spec, start)):
            found = moment
        if found is not None or start == after:
            return found
        window *= 4


def _count(spec: _Spec, after: datetime, until: datetime) -> int:
    """How many fire times lie in (after, until], without enumerating ordinary days.

    A matching date whose wall clock is untouched by any UTC offset change fires exactly once per
    wall time; only the two end dates and dates near a change are enumerated.
    """
    if until <= after:
        return 0
    first = after.astimezone(spec.zone).date()
    last = until.astimezone(spec.zone).date()
    unusual = _unusual_dates(spec.zone, after - 2 * _DAY, until + 2 * _DAY)
    ordinary = 0
    enumerated: set[datetime] = set()  # a set, as a gap collapses wall times of two dates
    # A repeated hour can carry fire times onto the neighbouring dates of `first` and `last`.
    for day in _dates(spec, first - _DAY):
        if day > last + _DAY:
            break
        if first < day < last and day not in unusual:
            ordinary += 1
        elif first <= day <= last or day in unusual:
            for of_day in spec.times:
                for moment in _instants(spec, datetime.combine(day, of_day)):
                    if after < moment <= until:
                        enumerated.add(moment)
    return ordinary * len(spec.times) + len(enumerated)


def _unusual_dates(zone: ZoneInfo, start: datetime, end: datetime) -> set[date]:
    """Local dates having wall times that a UTC offset change in [start, end] skips or repeats.

    Offsets are sampled hourly: tzdata never changes an offset and back within an hour (changes
    are days apart), so every change is seen between two samples.
    """
    unusual: set[date] = set()
    moment = start
    offset = moment.astimezone(zone).utcoffset()
    while moment < end:
        moment += _HOUR
        changed = moment.astimezone(zone).utcoffset()
        if changed is not None and offset is not None and changed != offset:
            # The affected wall times lie between the change's instant read with each offset.
            wall = moment.replace(tzinfo=None)
            day = (wall - _HOUR + min(offset, changed)).date()
            while day <= (wall + max(offset, changed)).date():
                unusual.add(day)
                day += _DAY
        offset = changed
    return unusual
