"""Cron schedules on every database: catch-up, overlap, progress in the database, real runs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import func, insert, select, update

from tests.conftest import tickrun, tickruns, write_app
from tickrun import App, TaskContext, store
from tickrun.cli.base import main
from tickrun.clock import as_utc
from tickrun.database import open_engine
from tickrun.lifecycle import RUNNING
from tickrun.loader import load_app
from tickrun.migrations import init_schema
from tickrun.runner import run
from tickrun.scheduler import enqueue_due
from tickrun.schema import schedules, tasks

T0 = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)


def count(engine, *where) -> int:  # noqa: ANN001
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tasks).where(*where)).scalar_one()


def schedule_row(engine, name: str):  # noqa: ANN001, ANN201
    with engine.connect() as conn:
        return conn.execute(select(schedules).where(schedules.c.name == name)).one()


def hourly_app(db_url: str, catchup: str, seen: list[datetime]) -> App:
    app = App(database_url=db_url)

    @app.schedule("0 * * * *", catchup=catchup)
    @app.task(context=True)
    def hourly(ctx: TaskContext) -> None:
        assert ctx.scheduled_for is not None
        seen.append(ctx.scheduled_for)

    app.use_database(db_url)
    return app


@pytest.mark.parametrize(
    ("catchup", "enqueued", "missed"), [("latest", 1, 71), ("all", 72, 0), ("none", 0, 72)]
)
def test_catchup_after_72_hours_of_downtime(
    db_url: str, catchup: str, enqueued: int, missed: int
) -> None:
    seen: list[datetime] = []
    app = hourly_app(db_url, catchup, seen)
    with freeze_time(T0) as frozen:
        assert run(app).scheduled == 0  # first sight: no backfill
        frozen.move_to(T0 + timedelta(hours=72, minutes=5))
        summary = run(app)
    assert summary.scheduled == enqueued
    assert len(seen) == enqueued
    row = schedule_row(app.engine, "hourly")
    assert row.missed == missed
    if catchup == "all":
        # Handlers see the hour they stand for, oldest first, each exactly once.
        assert sorted(seen) == [T0.replace(second=0) + timedelta(hours=h) for h in range(1, 73)]
    if catchup == "latest":
        assert seen == [T0.replace(second=0) + timedelta(hours=72)]


def test_catchup_none_keeps_the_on_time_occurrence(db_url: str) -> None:
    seen: list[datetime] = []
    app = hourly_app(db_url, "none", seen)
    with freeze_time(T0) as frozen:
        run(app)
        frozen.move_to(T0 + timedelta(minutes=59, seconds=40))  # 10:00:10, on time
        run(app)
    assert seen == [datetime(2026, 3, 2, 10, 0, tzinfo=UTC)]
    assert schedule_row(app.engine, "hourly").missed == 0


def test_catchup_all_is_capped_at_1000_per_run(db_url: str) -> None:
    app = App(database_url=db_url)

    @app.schedule("* * * * *", catchup="all")
    def minutely() -> None: ...

    app.use_database(db_url)
    engine = app.engine
    with freeze_time(T0) as frozen:
        enqueue_due(app, engine, T0)
        frozen.move_to(T0 + timedelta(minutes=1500))
        assert enqueue_due(app, engine, T0 + timedelta(minutes=1500)) == 1000
        assert enqueue_due(app, engine, T0 + timedelta(minutes=1500)) == 500
    assert count(engine) == 1500


def test_overlap_skip_while_previous_task_runs(db_url: str) -> None:
    app = App(database_url=db_url)
    calls: list[int] = []

    @app.schedule("*/5 * * * *", overlap="skip")
    def sync() -> None:
        calls.append(1)

    app.use_database(db_url)
    engine = app.engine
    with freeze_time(T0) as frozen:
        run(app)
        frozen.move_to(T0 + timedelta(minutes=5))
        # Another host's run enqueued the 09:05 occurrence and is still running it.

        assert enqueue_due(app, engine, T0 + timedelta(minutes=5)) == 1
        held = store.claim(
            engine,
            names=["sync"],
            queues=[],
            limit=1,
            worker="other",
            leases={"sync": 3600},
            now=T0 + timedelta(minutes=5),
        )
        assert len(held.tasks) == 1
        frozen.move_to(T0 + timedelta(minutes=20))
        summary = run(app)
    assert summary.scheduled == 0
    assert count(engine) == 1
    assert count(engine, tasks.c.status == RUNNING) == 1
    row = schedule_row(engine, "sync")
    assert row.skipped == 1  # 09:20 (latest); 09:10 and 09:15 were missed
    assert row.missed == 2
    assert calls == []


def test_pruning_finished_tasks_never_refires(db_url: str) -> None:
    seen: list[datetime] = []
    app = hourly_app(db_url, "all", seen)
    with freeze_time(T0) as frozen:
        run(app)
        frozen.move_to(T0 + timedelta(hours=2))
        run(app)
        assert len(seen) == 2
        with app.engine.begin() as conn:
            conn.execute(tasks.delete())
        run(app)
        fresh = hourly_app(str(app.engine.url.render_as_string(hide_password=False)), "all", seen)
        run(fresh)
    assert len(seen) == 2
    assert count(app.engine) == 0


def test_a_schedule_can_run_a_registered_task_with_a_payload(db_url: str) -> None:
    app = App(database_url=db_url)
    got: list[int] = []

    @app.task
    def report(size: int) -> None:
        got.append(size)

    app.schedule("0 9 * * *", task="report", name="report-small", payload={"size": 1})
    app.schedule("0 9 * * *", task="report", name="report-big", payload={"size": 9})
    app.use_database(db_url)
    with freeze_time(T0 - timedelta(days=1)) as frozen:
        run(app)
        frozen.move_to(T0)
        run(app)
    assert sorted(got) == [1, 9]
    with app.engine.connect() as conn:
        keys = sorted(conn.execute(select(tasks.c.key)).scalars())
    assert keys == [
        "schedule:report-big:2026-03-02T09:00:00Z",
        "schedule:report-small:2026-03-02T09:00:00Z",
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('@app.schedule("61 * * * *")\ndef nightly(): pass', "invalid cron expression"),
        ('@app.schedule("* * * * * *")\ndef nightly(): pass', "nightly"),
        ('@app.schedule("0 3 * * *", tz="Mars/Olympus")\ndef nightly(): pass', "Mars/Olympus"),
        ('@app.schedule("0 3 * * *", catchup="some")\ndef nightly(): pass', "catchup"),
        ('@app.schedule("0 3 * * *", overlap="queue")\ndef nightly(): pass', "overlap"),
        (
            '@app.schedule("0 3 * * *")\ndef nightly(): pass\n'
            'app.schedule("0 4 * * *", task="nightly")',
            "already registered",
        ),
        ('app.schedule("0 4 * * *", task="missing", name="nightly")', "unknown task"),
    ],
)
def test_bad_schedules_exit_2_naming_the_schedule(project: Path, source: str, problem: str) -> None:
    ref = write_app(project, "from tickrun import App\napp = App()\n" + source + "\n")
    db = f"sqlite:///{project / 't.db'}"
    assert tickrun("init", cwd=project, db=db).returncode == 0
    result = tickrun("run", "--app", ref, cwd=project, db=db)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: schedule 'nightly'")
    assert problem in lines[0]
    assert "Traceback" not in result.stderr


SCHEDULED_APP = """
    import os
    from tickrun import App

    app = App()

    @app.schedule("{cron}")
    def tick() -> None:
        fd = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"tick\\n")
        os.close(fd)
"""


@pytest.mark.slow
def test_concurrent_runs_enqueue_and_run_one_occurrence_once(
    db_url: str,
    engine,
    project: Path,  # noqa: ANN001
) -> None:
    now = datetime.now(UTC)
    fire = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    log = project / "ticks.log"
    expr = f"{fire.minute} {fire.hour} * * *"
    ref = write_app(project, SCHEDULED_APP.format(cron=expr, log=str(log)))
    with engine.begin() as conn:  # the schedule was first seen a day ago
        conn.execute(
            insert(schedules).values(
                name="tick",
                task="tick",
                cron=f"{fire.minute} {fire.hour} * * *",
                tz="UTC",
                last_fire_at=now - timedelta(days=1, minutes=-5),
                missed=0,
                skipped=0,
                updated_at=now,
            )
        )
    env = {"TICKRUN_APP": ref, "PATH": "/usr/bin:/bin"}
    for code, out, err in tickruns(8, "run", cwd=project, db=db_url, env=env):
        assert code == 0, err
        for word in ("Traceback", "unique", "Duplicate", "IntegrityError", "locked", "warning"):
            assert word not in out + err, out + err
    assert log.read_text() == "tick\n"
    assert count(engine) == 1
    assert schedule_row(engine, "tick").missed == 0


def test_schedules_listing_is_the_same_under_any_host_tz(db_url: str, project: Path) -> None:
    ref = write_app(
        project,
        """
        from tickrun import App
        app = App()

        @app.schedule("30 2 * * *", tz="Europe/London", catchup="all", overlap="skip")
        def nightly() -> None: ...
    """,
    )
    assert tickrun("run", "--app", ref, cwd=project, db=db_url).returncode == 0
    listings = []
    for tz in ("UTC", "Pacific/Kiritimati", "America/St_Johns"):
        result = tickrun(
            "schedules", "--json", "--app", ref, cwd=project, db=db_url, env={"TZ": tz}
        )
        assert result.returncode == 0, result.stderr
        listings.append(json.loads(result.stdout))
    assert listings[0] == listings[1] == listings[2]
    (row,) = listings[0]
    assert list(row) == [
        "name",
        "task",
        "cron",
        "tz",
        "next_run_at",
        "last_enqueued_at",
        "missed",
        "skipped",
        "overdue",
    ]
    assert row["tz"] == "Europe/London" and row["cron"] == "30 2 * * *"
    assert row["overdue"] is False
    next_run = datetime.fromisoformat(row["next_run_at"])
    assert next_run.utcoffset() == timedelta(0) and next_run > datetime.now(UTC)

    preview = tickrun(
        "schedules", "--preview", "3", "--format", "csv", "--app", ref, cwd=project, db=db_url
    )
    lines = preview.stdout.strip().splitlines()
    assert lines[0] == "name,tz,local_time,utc_time"
    assert len(lines) == 4
    assert all(",Europe/London," in line and "T02:30:00" in line for line in lines[1:])


def test_an_occurrence_no_run_has_handled_yet_shows_as_overdue(
    db_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "next" time of a schedule stays in the past until a run enqueues it: it was shown
    as if it were still to come."""
    monkeypatch.chdir(project)
    module = f"hourly_{uuid.uuid4().hex[:8]}"  # each database's test imports its own
    source = "from tickrun import App\napp = App()\n\n@app.schedule('0 * * * *')\n"
    ref = write_app(project, source + "def hourly() -> None: ...\n", module)
    app = load_app(ref)
    app.use_database(db_url)

    def schedules(*args: str) -> str:
        result = CliRunner().invoke(
            MAIN,  # type: ignore[arg-type]
            ["schedules", "--db", db_url, "--app", ref, *args],
            env={"COLUMNS": "200"},
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    with freeze_time(T0) as frozen:
        run(app)  # first sight: the schedule starts from T0
        (row,) = json.loads(schedules("--json"))
        assert (row["next_run_at"], row["overdue"]) == ("2026-03-02T10:00:00+00:00", False)
        assert "overdue" not in schedules()
        frozen.move_to(T0 + timedelta(hours=2))  # no run for two hours (a host down, say)
        (row,) = json.loads(schedules("--json"))
        assert (row["next_run_at"], row["overdue"]) == ("2026-03-02T10:00:00+00:00", True)
        assert "2026-03-02 10:00 overdue" in schedules()
        run(app)
        (row,) = json.loads(schedules("--json"))
        assert (row["next_run_at"], row["overdue"]) == ("2026-03-02T12:00:00+00:00", False)


class _Main:
    """Lets CliRunner drive tickrun's own entry point: one-line errors, contract exit codes."""

    name = "tickrun"

    def main(self, args: list[str], prog_name: str, **_: object) -> None:
        main(list(args))


MAIN = _Main()


PREVIEW_APP = """
    from tickrun import App

    app = App()

    @app.schedule({cron!r}, tz={tz!r}, catchup="all")
    def tick() -> None: ...
"""


@pytest.mark.parametrize(
    ("cron", "tz", "first_seen", "expected"),
    [
        # Day-of-week starts with '*': the 1st only when it is an even weekday (AND, not OR).
        (
            "0 0 1 * */2",
            "UTC",
            "2020-01-01T00:00:30+00:00",
            ["2020-02-01T00:00:00+00:00", "2020-03-01T00:00:00+00:00", "2020-08-01T00:00:00+00:00"],
        ),
        # Day-of-month starts with '*': the first Monday of the month.
        (
            "1 1 */100,1-7 * MON",
            "America/New_York",
            "2026-02-01T00:00:00-05:00",
            ["2026-02-02T01:01:00-05:00", "2026-03-02T01:01:00-05:00", "2026-04-06T01:01:00-04:00"],
        ),
        # '*' inside, not at the start of, the hour field: fixed-time, so 01:00 fires once.
        (
            "0 1,*/6 * * *",
            "America/New_York",
            "2026-10-31T23:30:00-04:00",
            ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T06:00:00-05:00"],
        ),
        # The same on the spring-forward night: the skipped 02:00 fires once, after the jump.
        (
            "0 2,*/12 * * *",
            "America/New_York",
            "2026-03-07T23:30:00-05:00",
            ["2026-03-08T00:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T12:00:00-04:00"],
        ),
        (
            "0,*/30 1 * * *",
            "America/New_York",
            "2026-10-31T23:30:00-04:00",
            ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:00:00-05:00"],
        ),
    ],
)
def test_preview_lists_what_run_enqueues(
    db_url: str,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    cron: str,
    tz: str,
    first_seen: str,
    expected: list[str],
) -> None:
    """`tickrun schedules --preview` and `tickrun run`, both through the CLI in frozen time, name
    the same occurrences, and they are the ones Debian cron would run."""
    import sys
    import uuid

    from click.testing import CliRunner

    from tests.helpers.cli import _Main

    # A module name of its own, since each case's application is imported in this process.
    module = f"preview_{uuid.uuid4().hex}"
    ref = write_app(project, PREVIEW_APP.format(cron=cron, tz=tz), module=module)
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    env = {"TICKRUN_DATABASE_URL": None, "TICKRUN_APP": None}

    def cli(*args: str) -> str:
        argv = ["--db", db_url, "--app", ref, *args]
        result = CliRunner().invoke(_Main(), argv, env=env)  # type: ignore[arg-type]
        assert result.exit_code == 0, result.output
        return result.output

    start = datetime.fromisoformat(first_seen)
    try:
        with freeze_time(start) as frozen:
            cli("run")  # first sight: nothing before it is due
            lines = cli("schedules", "--preview", "3", "--format", "csv").strip().splitlines()
            assert lines[0] == "name,tz,local_time,utc_time"
            local = [line.split(",")[2] for line in lines[1:]]
            previewed = [datetime.fromisoformat(line.split(",")[3]) for line in lines[1:]]
            # Like cron, a run just after each previewed time; catchup="all" would also enqueue
            # anything the preview left out.
            for moment in previewed:
                frozen.move_to(moment + timedelta(seconds=30))
                cli("run")
    finally:
        sys.modules.pop(module, None)
    assert local == expected
    assert previewed == [datetime.fromisoformat(t) for t in expected]
    engine = open_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(tasks.c.scheduled_for).order_by(tasks.c.scheduled_for)).all()
    assert [as_utc(at) for (at,) in rows] == previewed
    assert schedule_row(engine, "tick").missed == 0


def test_schedule_row_keeps_progress_when_the_expression_changes(db_url: str) -> None:
    seen: list[datetime] = []
    app = hourly_app(db_url, "latest", seen)
    with freeze_time(T0):
        run(app)
    with app.engine.begin() as conn:
        conn.execute(update(schedules).values(cron="0 0 1 1 *"))
    with freeze_time(T0 + timedelta(hours=1)):
        run(app)
    row = schedule_row(app.engine, "hourly")
    assert row.cron == "0 * * * *"
    assert len(seen) == 1


def run_check(db_url: str, *args: str) -> tuple[int, list[str]]:
    """`tickrun check` in-process (so frozen time reaches it), through the real entry point."""
    from click.testing import CliRunner

    from tests.helpers.cli import _Main

    result = CliRunner().invoke(_Main(), ["--db", db_url, "check", *args])  # type: ignore[arg-type]
    return result.exit_code, result.output.strip().splitlines()  # stdout and stderr


def test_check_stale_crossed_not_crossed_never_and_after_prune(db_url: str) -> None:
    seen: list[datetime] = []
    app = hourly_app(db_url, "latest", seen)
    with freeze_time(T0) as frozen:
        run(app)  # first sight
        code, lines = run_check(db_url, "--stale", "hourly=2h")
        assert code == 1
        assert lines == ["stale: schedule 'hourly' has never succeeded (--stale hourly=2h)"]
        frozen.move_to(T0 + timedelta(minutes=30))  # 09:30: the 10:00 occurrence is not due
        frozen.move_to(T0 + timedelta(hours=1))  # 10:00:30
        run(app)
        assert len(seen) == 1
        frozen.move_to(T0 + timedelta(hours=2))
        code, lines = run_check(db_url, "--stale", "hourly=2h", "--max-silence", "2h")
        assert code == 0, lines
        assert lines[0].startswith("OK:")
        with app.engine.begin() as conn:  # pruning the finished task keeps the last success
            conn.execute(tasks.delete())
        assert run_check(db_url, "--stale", "hourly=2h")[0] == 0
        frozen.move_to(T0 + timedelta(hours=3, minutes=1))
        code, lines = run_check(db_url, "--stale", "hourly=2h", "--max-silence", "2h")
    assert code == 1
    assert lines == [
        "silence: no run started in the last 2h (the last one started 2h1m ago, "
        "at 2026-03-02 10:00:30 UTC)",
        "stale: schedule 'hourly' last succeeded 2h1m ago, at 2026-03-02 10:00:30 UTC "
        "(--stale hourly=2h)",
    ]


@pytest.mark.parametrize("arg", ["nosuch=1h", "hourly", "hourly=soon", "=1h"])
def test_check_stale_bad_input_exits_2(db_url: str, arg: str) -> None:
    seen: list[datetime] = []
    run(hourly_app(db_url, "latest", seen))
    code, lines = run_check(db_url, "--stale", arg)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error:"), lines


@pytest.mark.parametrize(
    ("tz", "day", "expected"),
    [
        # (local day, {expression: number of firings over that local day})
        (
            "America/New_York",
            "2026-03-08",
            {
                "30 2 * * *": 1,
                "30 1 * * *": 1,
                "0 * * * *": 23,
                "*/15 * * * *": 92,
                "0 2,*/12 * * *": 3,  # fixed-time: the skipped 02:00 fires once after the jump
                "30 1 */2 * 0": 0,  # odd days AND Sundays: the 8th is not odd
            },
        ),
        (
            "America/New_York",
            "2026-11-01",
            {
                "30 2 * * *": 1,
                "30 1 * * *": 1,
                "0 * * * *": 25,
                "*/15 * * * *": 100,
                "0 1,*/6 * * *": 5,  # fixed-time: 01:00 once
                "0,*/30 1 * * *": 2,
                "30 1 */2 * 0": 1,
            },
        ),
        (
            "Europe/London",
            "2026-03-29",
            {"30 2 * * *": 1, "30 1 * * *": 1, "0 * * * *": 23, "*/15 * * * *": 92},
        ),
        (
            "Europe/London",
            "2026-10-25",
            {"30 2 * * *": 1, "30 1 * * *": 1, "0 * * * *": 25, "*/15 * * * *": 100},
        ),
    ],
)
def test_runs_every_five_minutes_through_a_dst_day(
    tmp_path: Path, tz: str, day: str, expected: dict[str, int]
) -> None:
    """Frozen time moved through the whole local day, `tickrun run` every 5 minutes (SQLite):
    each expression fires as often as the Debian rules say, once per occurrence, at the
    instants the cron module computes."""
    from zoneinfo import ZoneInfo

    from tickrun import cron

    url = f"sqlite:///{tmp_path / 'dst.db'}"
    app = App(database_url=url)

    @app.task
    def tick() -> None: ...

    for i, expr in enumerate(expected):
        app.schedule(expr, task="tick", name=f"s{i}", tz=tz, catchup="all")
    app.use_database(url)
    init_schema(app.engine)
    zone = ZoneInfo(tz)
    start = datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(UTC)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC)
    with freeze_time(start - timedelta(seconds=1)) as frozen:
        run(app)  # first sight, just before local midnight
        moment = start
        while moment < end:
            frozen.move_to(moment + timedelta(seconds=30))
            run(app)
            moment += timedelta(minutes=5)
    with app.engine.connect() as conn:
        rows = conn.execute(select(tasks.c.schedule, tasks.c.scheduled_for)).all()
    for i, (expr, count) in enumerate(expected.items()):
        fired = sorted(at for name, at in rows if name == f"s{i}")
        assert len(fired) == count, expr
        window = (start - timedelta(seconds=1), end - timedelta(seconds=1))
        assert fired == cron.fire_times(expr, tz, *window), expr


def test_a_schedule_name_must_fit_its_column() -> None:
    from tickrun.errors import ScheduleError

    app = App()

    @app.task
    def nightly() -> None: ...

    with pytest.raises(ScheduleError, match="1 to 200 characters"):
        app.schedule("0 3 * * *", task="nightly", name="n" * 201)
    app.schedule("0 3 * * *", task="nightly", name="n" * 200)
