"""Pure parts of tickrun, without a database or sleeps: backoff, durations, payload checks,
bounded error text and task options."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from tickrun import App, ConfigError, PayloadError, TickrunError, UnknownTask, UsageError
from tickrun.backoff import as_backoff, exponential
from tickrun.durations import format_duration, parse_duration
from tickrun.errors import Fail, Retry
from tickrun.execution import TaskContext
from tickrun.failures import MAX_TEXT_BYTES, bounded, describe
from tickrun.runner import RunSummary

NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)

# -- backoff ---------------------------------------------------------------------------------


def test_backoff_number_is_the_same_delay_every_time() -> None:
    fn = as_backoff(45)
    assert [fn(a) for a in (1, 2, 10)] == [45.0, 45.0, 45.0]
    assert as_backoff(0)(3) == 0.0
    assert as_backoff(2.5)(1) == 2.5


def test_backoff_list_follows_the_attempts_and_its_last_step_repeats() -> None:
    fn = as_backoff([10, 60, 300])
    assert [fn(a) for a in range(1, 7)] == [10.0, 60.0, 300.0, 300.0, 300.0, 300.0]
    assert as_backoff((5,))(99) == 5.0


def test_backoff_takes_durations_as_the_cli_writes_them() -> None:
    assert as_backoff("30s")(1) == 30.0
    assert as_backoff("200ms")(4) == 0.2
    steps = as_backoff(["10s", 60, "5m", timedelta(hours=1)])
    assert [steps(a) for a in (1, 2, 3, 4, 9)] == [10, 60, 300, 3600, 3600]


def test_backoff_callable_is_called_with_the_attempt_that_failed() -> None:
    fn = as_backoff(lambda attempt: attempt * 7)
    assert fn(1) == 7
    assert fn(3) == 21


@pytest.mark.parametrize(
    "spec", [-1, [], [10, -5], "30x", "-1m", True, None, {"a": 1}, ["x"], math.inf]
)
def test_backoff_rejects_other_forms(spec: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        as_backoff(spec)


def test_exponential_without_jitter_grows_by_factor_and_stops_at_cap() -> None:
    fn = exponential(jitter=0)
    assert [fn(a) for a in range(1, 7)] == [30, 120, 480, 1920, 3600, 3600]
    small = exponential(base=2, factor=3, cap=50, jitter=0)
    assert [small(a) for a in range(1, 6)] == [2, 6, 18, 50, 50]


def test_exponential_jitter_draws_within_plus_minus_its_fraction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The extremes of the random draw give exactly the documented bounds.
    fn = exponential()
    monkeypatch.setattr("tickrun.backoff.random.uniform", lambda low, high: low)
    assert [round(fn(a), 6) for a in (1, 2, 3, 4, 9)] == [24.0, 96.0, 384.0, 1536.0, 2880.0]
    monkeypatch.setattr("tickrun.backoff.random.uniform", lambda low, high: high)
    assert [round(fn(a), 6) for a in (1, 2, 3, 4, 9)] == [36.0, 144.0, 576.0, 2304.0, 4320.0]


def test_exponential_jitter_really_varies_and_stays_in_bounds() -> None:
    fn = exponential(base=100, factor=2, cap=1000, jitter=0.2)
    for attempt, raw in ((1, 100), (3, 400), (20, 1000)):
        draws = [fn(attempt) for _ in range(2000)]
        assert all(raw * 0.8 <= d <= raw * 1.2 for d in draws)
        # 2000 uniform draws all landing in one half of the band is practically impossible.
        assert min(draws) < raw * 0.9 < raw * 1.1 < max(draws)


def test_exponential_cap_holds_far_beyond_float_range() -> None:
    # factor ** attempt overflows a float long before max_attempts could stop it.
    fn = exponential(base=30, factor=2.0, cap=3600, jitter=0)
    assert fn(5000) == 3600
    assert exponential(jitter=0)(10_000) == 3600


@pytest.mark.parametrize(
    "kwargs", [{"base": -1}, {"factor": 0.5}, {"cap": -1}, {"jitter": 1}, {"jitter": -0.1}]
)
def test_exponential_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        exponential(**kwargs)


def test_retry_validates_its_delay() -> None:
    assert Retry().delay is None
    assert Retry(2.5).delay == 2.5
    with pytest.raises(ValueError):
        Retry(-1)


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("45", 45),
        ("0", 0),
        ("1.5", 1.5),
        ("1.5h", 5400),
        (" 2H ", 7200),
        ("200ms", 0.2),
        ("1w", 604800),
        ("1w2d", 777600),
        ("1m30s500ms", 90.5),
        ("1ms", 0.001),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        *["5x", "-3", "-1h", "", "   ", "abc", "h", "1h 30m", "30 s", "1m-30s", "nan", "inf"],
        *["0x10", "ms", "1y", "1msec", "-200ms"],
    ],
)
def test_parse_duration_rejects_bad_input(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration") as info:
        parse_duration(text)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (59, "59s"),
        (60, "1m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (29.6, "30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 61, 3599, 3600, 3661, 86399, 86401, 1_000_000])
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# -- payload checks (App.task_row) -------------------------------------------------------------


@pytest.fixture
def app() -> App:
    app = App()

    @app.task(max_attempts=3, queue="mail", priority=2)
    def needs(user_id: int, flag: bool = False) -> None: ...

    @app.task
    def anything(**kwargs: Any) -> None: ...

    @app.task
    def nothing() -> None: ...

    @app.task(context=True)
    def with_ctx(ctx: TaskContext, user_id: int) -> None: ...

    @app.task
    def positional_only(a: int, /) -> None: ...

    return app


def test_task_row_of_a_fitting_payload(app: App) -> None:
    with freeze_time(NOW):
        row = app.task_row("needs", {"user_id": 42})
    assert row["name"] == "needs"
    assert json.loads(row["payload"]) == {"user_id": 42}
    assert row["status"] == "pending"
    assert row["queue"] == "mail"
    assert row["priority"] == 2
    assert row["attempts"] == 0
    assert row["max_attempts"] == 3
    assert row["key"] is None
    assert row["run_at"] == row["claimable_at"] == row["created_at"] == NOW


def test_task_row_overrides_and_defaults(app: App) -> None:
    with freeze_time(NOW):
        assert json.loads(app.task_row("nothing", None)["payload"]) == {}
        for extreme in (2**31 - 1, -(2**31)):
            assert app.task_row("nothing", {}, priority=extreme)["priority"] == extreme
        row = app.task_row(
            "needs", {"user_id": 1}, key="k" * 255, queue="other", priority=-5, delay=90
        )
        assert row["queue"] == "other"
        assert row["priority"] == -5
        assert row["key"] == "k" * 255
        assert row["run_at"] == NOW + timedelta(seconds=90)
        assert app.task_row("nothing", {}, delay=timedelta(minutes=2))["run_at"] == NOW + (
            timedelta(minutes=2)
        )
        assert app.task_row("anything", {"a": [1, {"b": None}], "c": "é"})["payload"]


def test_durations_in_the_python_api_read_as_on_the_command_line(app: App) -> None:
    """delay, timeout, lease and backoff take what --in takes: seconds, or "10s", "5m"..."""
    with freeze_time(NOW):
        for delay, seconds in (("10s", 10), ("200ms", 0.2), ("1w", 604800), ("90", 90)):
            row = app.task_row("nothing", {}, delay=delay)
            assert row["run_at"] == NOW + timedelta(seconds=seconds), delay
    registry = App()
    registry.task(name="t", timeout="1500ms", lease="1h30m", backoff="45s")(noop)
    spec = registry.tasks["t"]
    assert (spec.timeout, spec.lease, spec.backoff(3)) == (1.5, 5400.0, 45.0)


def test_task_row_run_at_is_stored_in_utc(app: App) -> None:
    paris_summer = timezone(timedelta(hours=2))
    row = app.task_row("nothing", {}, run_at=datetime(2026, 7, 1, 11, 0, tzinfo=paris_summer))
    assert row["run_at"] == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    assert row["run_at"].utcoffset() == timedelta(0)
    naive = app.task_row("nothing", {}, run_at=datetime(2026, 7, 1, 9, 0))
    assert naive["run_at"] == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


def test_unknown_task(app: App) -> None:
    with pytest.raises(UnknownTask, match="unknown task 'nope'") as info:
        app.task_row("nope", {})
    assert info.value.exit_code == 2
    assert "needs" in str(info.value)  # the message lists what is registered


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ([1, 2], "an array"),
        ((1,), "an array"),
        ("x", "a string"),
        (5, "5"),
        (True, "true"),
        (1.5, "1.5"),
    ],
)
def test_payload_must_be_an_object(app: App, payload: Any, kind: str) -> None:
    with pytest.raises(PayloadError, match=f"payload must be a JSON object, not {kind}"):
        app.task_row("anything", payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"when": datetime(2026, 1, 1)},
        {"s": {1, 2}},
        {"o": object()},
        {"b": b"bytes"},
        {"x": math.nan},
        {"x": math.inf},
        {"deep": [{"x": -math.inf}]},
    ],
)
def test_payload_must_be_json_serialisable(app: App, payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError, match="not JSON-serialisable") as info:
        app.task_row("anything", payload)
    assert info.value.exit_code == 2


def test_payload_keys_must_be_strings(app: App) -> None:
    with pytest.raises(PayloadError, match="keys must be strings"):
        app.task_row("anything", {1: "x"})


@pytest.mark.parametrize(
    ("task", "payload", "needle"),
    [
        ("needs", {}, "missing a required argument: 'user_id'"),
        ("needs", {"user_id": 1, "nope": 2}, "unexpected keyword argument 'nope'"),
        ("nothing", {"x": 1}, "unexpected keyword argument 'x'"),
        ("with_ctx", {}, "missing a required argument: 'user_id'"),
        ("with_ctx", {"ctx": 1, "user_id": 1}, "multiple values for argument 'ctx'"),
        ("positional_only", {"a": 1}, "a"),
    ],
)
def test_payload_must_fit_the_handler(app: App, task: str, payload: dict, needle: str) -> None:
    with pytest.raises(PayloadError, match=f"payload does not fit {task}") as info:
        app.task_row(task, payload)
    assert needle in str(info.value)


def test_context_handler_signature_is_shown_without_its_context(app: App) -> None:
    app.task_row("with_ctx", {"user_id": 1})
    with pytest.raises(PayloadError) as info:
        app.task_row("with_ctx", {})
    shown = str(info.value).removeprefix("payload does not fit ")
    assert shown.startswith("with_ctx(user_id:")
    assert "ctx:" not in shown.replace("with_ctx(", "")


def test_a_fitting_payload_does_not_make_a_later_mismatch_pass(app: App) -> None:
    app.task_row("needs", {"user_id": 1, "flag": True})
    app.task_row("needs", {"user_id": 1, "flag": True})
    with pytest.raises(PayloadError):
        app.task_row("needs", {"flag": True})
    app.task_row("anything", {"whatever": 1})


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"key": ""}, "key must be"),
        ({"key": "k" * 256}, "key must be"),
        ({"key": 5}, "key must be"),
        ({"priority": "1"}, "priority must be a 32-bit integer"),
        ({"priority": True}, "priority must be a 32-bit integer"),
        ({"priority": 1.5}, "priority must be a 32-bit integer"),
        ({"priority": 2**31}, "priority must be a 32-bit integer"),
        ({"priority": -(2**31) - 1}, "priority must be a 32-bit integer"),
        ({"queue": ""}, "queue must be"),
        ({"queue": "two words"}, "queue must be"),
        ({"queue": "q" * 101}, "queue must be"),
        ({"queue": 123}, "queue must be"),
        ({"delay": -1}, "delay must be"),
        ({"delay": math.nan}, "delay must be"),
        ({"delay": math.inf}, "delay must be"),
        ({"delay": "10x"}, "delay must be"),
        ({"delay": "-10s"}, "delay must be"),
        ({"delay": [10]}, "delay must be"),
        ({"delay": timedelta(seconds=-1)}, "delay must be"),
        ({"run_at": "2026-01-01T00:00:00"}, "run_at must be a datetime"),
        ({"run_at": date(2026, 1, 1)}, "run_at must be a datetime"),
        ({"delay": 5, "run_at": NOW}, "delay or run_at, not both"),
    ],
)
def test_bad_enqueue_options(app: App, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as info:
        app.task_row("needs", {"user_id": 1}, **kwargs)
    assert info.value.exit_code == 2


# -- errors: describe / bounded ----------------------------------------------------------------


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


class NotAString(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


def test_describe_gives_type_message_and_traceback() -> None:
    error, trace = describe(raised(ValueError("boom")))
    assert error == "ValueError: boom"
    assert trace.startswith("Traceback (most recent call last):")
    assert trace.rstrip().endswith("ValueError: boom")
    assert describe(raised(KeyError()))[0] == "KeyError"
    assert describe(raised(Fail("gave up")))[0] == "Fail: gave up"


@pytest.mark.parametrize("cls", [BrokenStr, NotAString])
def test_describe_survives_an_exception_whose_str_fails(cls: type[Exception]) -> None:
    error, trace = describe(raised(cls()))
    assert error.startswith(f"{cls.__qualname__}: ")
    assert "str()" in error
    assert "Traceback" in trace
    assert cls.__qualname__ in trace


def test_describe_bounds_a_10_mb_message_keeping_head_and_tail() -> None:
    message = "HEAD-" + "é" * 5_000_000 + "-TAIL"  # 10 MB of UTF-8
    error, trace = describe(raised(ValueError(message)))
    for text in (error, trace):
        size = len(text.encode("utf-8"))
        assert MAX_TEXT_BYTES - 1024 < size <= MAX_TEXT_BYTES == 64 * 1024
        assert "bytes cut" in text
        assert text.rstrip().endswith("-TAIL")
    assert error.startswith("ValueError: HEAD-ééé")
    assert trace.startswith("Traceback (most recent call last):")


def test_bounded_leaves_short_text_alone_and_cuts_on_character_boundaries() -> None:
    assert bounded("short") == "short"
    exact = "x" * MAX_TEXT_BYTES
    assert bounded(exact) == exact
    for filler in ("x", "é", "€", "😀"):
        out = bounded("<" + filler * 40_000 + ">", limit=1000)
        raw = out.encode("utf-8")  # a character cut in half would not encode back
        assert len(raw) <= 1000
        assert out.startswith("<" + filler) and out.endswith(filler + ">")
        assert "\ufffd" not in out


def test_bounded_text_is_always_valid_utf8() -> None:
    # Lone surrogates (bytes decoded with surrogateescape, e.g. a subprocess's output) cannot
    # be stored by any driver; the recorded text must still be writable.
    error, trace = describe(raised(RuntimeError("output: \udcff\udcfe end")))
    for text in (error, trace, bounded("\ud800" * 10), bounded("\ud800" * 100_000)):
        text.encode("utf-8")
    assert error.startswith("RuntimeError: output: ") and error.endswith(" end")


# -- task options at registration --------------------------------------------------------------


def noop() -> None: ...


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": "10x"}, "timeout"),
        ({"timeout": "0s"}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"lease": 0}, "lease"),
        ({"lease": 0.5}, "lease"),
        ({"lease": "60 seconds"}, "lease"),
        ({"lease": "500ms"}, "lease"),
        ({"lease": math.nan}, "lease"),
        ({"lease": math.inf}, "lease"),
        ({"queue": ""}, "queue"),
        ({"queue": "two words"}, "queue"),
        ({"queue": None}, "queue"),
        ({"queue": "q" * 101}, "queue"),
        ({"priority": 1.5}, "priority"),
        ({"priority": False}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"backoff": -1}, "backoff"),
        ({"backoff": []}, "backoff"),
        ({"backoff": [10, -1]}, "backoff"),
        ({"backoff": "soon"}, "backoff"),
        ({"backoff": ["1m", "later"]}, "backoff"),
        ({"backoff": True}, "backoff"),
    ],
)
def test_task_options_are_checked_at_registration(options: dict[str, Any], needle: str) -> None:
    app = App()
    with pytest.raises(ConfigError, match=needle) as info:
        app.task(**options)(noop)
    assert isinstance(info.value, TickrunError)
    assert info.value.exit_code == 2
    assert app.tasks == {}


def test_several_bad_options_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        App().task(max_attempts=0, lease=0, name="job")(noop)
    assert "'job'" in str(info.value)
    assert "max_attempts" in str(info.value) and "lease" in str(info.value)


def test_a_task_name_is_registered_once() -> None:
    app = App()
    app.task(name="job")(noop)
    with pytest.raises(ConfigError, match="registered twice"):
        app.task(name="job")(lambda: None)


def test_context_task_needs_a_parameter_for_its_context() -> None:
    with pytest.raises(ConfigError, match="context=True"):
        App().task(context=True)(noop)


def test_registration_keeps_the_options() -> None:
    app = App()
    fn = app.task(
        max_attempts=2, backoff=[1, 2], timeout=3, lease=4, queue="q", priority=-1, name="n:x"
    )(noop)
    assert fn is noop  # the decorator gives the function back, callable as before
    spec = app.tasks["n:x"]
    assert (spec.max_attempts, spec.timeout, spec.lease, spec.queue, spec.priority) == (
        2,
        3,
        4.0,
        "q",
        -1,
    )
    assert [spec.backoff(a) for a in (1, 2, 3)] == [1.0, 2.0, 2.0]
    assert app.task(noop).__name__ == "noop"
    assert "noop" in app.tasks


def test_run_summary_counts_read_as_english() -> None:
    one = RunSummary(run_id=7, worker="h:1", lost=1, stale=1, alerts_sent=1, alerts_failed=1)
    assert one.line().startswith(
        "tickrun run 7: claimed 0, succeeded 0, retried 0, dead 0, 1 lost lease, "
        "1 stale outcome, 1 alert sent, 1 alert delivery failed in "
    ), one.line()
    two = RunSummary(run_id=7, worker="h:1", lost=2, stale=2, alerts_sent=2, alerts_failed=2)
    assert ", 2 lost leases, 2 stale outcomes, 2 alerts sent, 2 alert deliveries failed in " in (
        two.line()
    ), two.line()
