"""What a run tells the outside world besides its summary line, on every database: Prometheus
metrics (parsed with prometheus_client and checked against the database), JSON logs, and
Healthchecks-style pings to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from tests.conftest import tickrun, write_app
from tests.helpers.servers import Receiver
from tickrun import App, Fail, metrics
from tickrun.runner import RunOptions, run
from tickrun.schema import alerts, attempts, runs, schedules, tasks

T0 = datetime(2026, 4, 6, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def parse(text: str) -> dict[str, Any]:
    """name -> family, as prometheus_client reads the exposition."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_match_the_database(db_url: str) -> None:
    app = App(database_url=db_url, alert_webhook="http://127.0.0.1:9/hooks/secret")
    app.use_database(db_url)

    @app.task
    def fine(n: int) -> None:
        pass

    @app.task(backoff=3600)
    def shaky() -> None:
        raise RuntimeError("again")

    @app.task
    def doomed() -> None:
        raise Fail("gone")

    @app.schedule("* * * * *", name="minutely")
    def tick() -> None:
        pass

    with freeze_time(T0) as frozen:
        run(app, RunOptions(worker="w1"))  # the schedule is first seen: nothing due yet
        for n in range(3):
            app.enqueue("fine", {"n": n})
        app.enqueue("shaky")
        app.enqueue("doomed")
        app.enqueue("fine", {"n": 9}, delay=600)  # not due
        frozen.move_to(T0 + timedelta(seconds=61))
        done = run(app, RunOptions(worker="w1", fail_on="never"))
        assert (done.succeeded, done.retried, done.dead) == (4, 1, 1)
        for n in range(2):
            app.enqueue("fine", {"n": 10 + n})  # due, waiting
        frozen.move_to(T0 + timedelta(seconds=90))
        now = T0 + timedelta(seconds=90)
        text = metrics.render(metrics.collect(app.engine, now, window=3600))

    families = parse(text)
    assert all(name.startswith("tickrun_") for name in families)
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            assert not line.split()[2].endswith("_total")  # gauges and summaries only
    for name in families:  # every family has its HELP and TYPE lines
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text

    engine = app.engine
    with engine.connect() as conn:
        by_status = Counter(
            {
                (n, s): c
                for n, s, c in conn.execute(
                    select(tasks.c.name, tasks.c.status, func.count()).group_by(
                        tasks.c.name, tasks.c.status
                    )
                )
            }
        )
        outcomes = Counter(
            {
                (n, o): c
                for n, o, c in conn.execute(
                    select(tasks.c.name, attempts.c.outcome, func.count())
                    .select_from(attempts.join(tasks, tasks.c.id == attempts.c.task_id))
                    .group_by(tasks.c.name, attempts.c.outcome)
                )
            }
        )
        backlog = conn.execute(
            select(func.count()).select_from(alerts).where(alerts.c.status == "pending")
        ).scalar_one()
        last_run = conn.execute(
            select(runs.c.started_at, runs.c.finished_at, runs.c.exit_code).order_by(
                runs.c.id.desc()
            )
        ).first()
        success = conn.execute(
            select(schedules.c.last_success_at).where(schedules.c.name == "minutely")
        ).scalar_one()

    got = samples(families["tickrun_tasks"])
    for (name, status), n in by_status.items():
        assert got[(("status", status), ("task", name))] == n
    assert sum(got.values()) == sum(by_status.values())
    assert samples(families["tickrun_due_tasks"]) == {(("task", "fine"),): 2}
    assert samples(families["tickrun_oldest_due_age_seconds"]) == {(("task", "fine"),): 29.0}
    assert samples(families["tickrun_dead_tasks"]) == {(): 1}
    assert backlog == 1
    assert samples(families["tickrun_alerts_pending"]) == {(("target", "webhook"),): 1}
    assert samples(families["tickrun_window_seconds"]) == {(): 3600}
    tried = samples(families["tickrun_window_attempts"])
    assert tried == {(("outcome", o), ("task", n)): c for (n, o), c in outcomes.items()}
    assert samples(families["tickrun_window_failures"]) == {
        (("outcome", "failed"), ("task", "doomed")): 1,
        (("outcome", "failed"), ("task", "shaky")): 1,
    }
    runtime = families["tickrun_attempt_duration_seconds"]
    assert runtime.type == "summary"
    counts = samples(runtime, "tickrun_attempt_duration_seconds_count")
    assert counts[(("task", "fine"),)] == 3 and counts[(("task", "minutely"),)] == 1
    quantiles = {s.labels["quantile"] for s in runtime.samples if "quantile" in s.labels}
    assert quantiles == {"0.5", "0.9", "0.99"}
    waits = samples(families["tickrun_wait_seconds"], "tickrun_wait_seconds_count")
    assert waits[(("task", "fine"),)] == 3
    started, finished, code = last_run
    assert samples(families["tickrun_last_run_start_timestamp_seconds"]) == {
        (): started.timestamp()
    }
    assert samples(families["tickrun_last_run_end_timestamp_seconds"]) == {(): finished.timestamp()}
    assert samples(families["tickrun_last_run_exit_code"]) == {(): code}
    assert samples(families["tickrun_schedule_last_success_timestamp_seconds"]) == {
        (("schedule", "minutely"),): success.timestamp()
    }


def test_labels_are_escaped() -> None:
    family = metrics.Family("tickrun_x", "gauge", "A test.")
    family.add(1, task='a"b\\c\nd')
    (parsed,) = text_string_to_metric_families(metrics.render([family]))
    assert parsed.samples[0].labels == {"task": 'a"b\\c\nd'}


def test_the_metrics_file_is_replaced_never_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "tickrun.prom"
    path.write_text("old\n")
    with path.open() as reader:  # a scrape that started before the write
        metrics.write_atomically(str(path), "new\n")
        assert reader.read() == "old\n"  # it keeps reading the old file, whole
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tickrun.prom"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


JOBS = """
import logging
import os

from tickrun import App, Fail

app = App()


@app.task(context=True)
def doomed(ctx):
    ctx.logger.warning("giving up on %s", ctx.task_id)
    raise Fail("gone for good")


@app.task(backoff=3600)
def shaky():
    raise RuntimeError("try later")


@app.task(context=True, timeout=60)
def in_child(ctx):
    ctx.logger.warning("from the child")


@app.task
def fine():
    pass
"""


def test_metrics_command_and_run_metrics_file(db_url: str, project: Path) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref}
    tickrun("enqueue", "fine", cwd=project, db=db_url, env=env)
    out = project / "textfile" / "tickrun.prom"
    out.parent.mkdir()
    result = tickrun("run", "--metrics-file", str(out), cwd=project, db=db_url, env=env)
    assert result.returncode == 0, result.stderr
    families = parse(out.read_text())
    assert samples(families["tickrun_last_run_exit_code"]) == {(): 0}
    assert samples(families["tickrun_tasks"])[(("status", "succeeded"), ("task", "fine"))] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["tickrun.prom"]

    printed = tickrun("metrics", "--window", "10m", cwd=project, db=db_url, env=env)
    assert printed.returncode == 0, printed.stderr
    assert samples(parse(printed.stdout)["tickrun_window_seconds"]) == {(): 600}
    written = tickrun("metrics", "--output", str(out), cwd=project, db=db_url, env=env)
    assert (written.returncode, written.stdout) == (0, "")
    assert "tickrun_dead_tasks 0" in out.read_text()

    for args in (["metrics", "--output", "/nonexistent/dir/x.prom"], ["metrics", "--window", "x"]):
        bad = tickrun(*args, cwd=project, db=db_url, env=env)
        assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
        assert bad.stderr.startswith("error: ")
    bad = tickrun("run", "--metrics-file", "/nonexistent/x.prom", cwd=project, db=db_url, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --metrics-file"), bad.stderr


# -- logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_json_logs_one_object_per_event(db_url: str, project: Path, how: str) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref}
    ids = {}
    for name in ("doomed", "shaky", "in_child", "fine"):
        ids[name] = int(tickrun("enqueue", name, cwd=project, db=db_url, env=env).stdout)
    args = ["run", "--log-format", "json"] if how == "flag" else ["run"]
    if how == "env":
        env["TICKRUN_LOG_FORMAT"] = "json"
    result = tickrun(*args, cwd=project, db=db_url, env=env)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    by_event = {r.get("event"): r for r in records if r.get("event")}
    dead = by_event["dead"]
    assert (dead["task_id"], dead["task"], dead["attempt"], dead["level"]) == (
        ids["doomed"],
        "doomed",
        1,
        "error",
    )
    assert dead["error"] == "Fail: gone for good" and dead["worker"] and "duration_s" in dead
    retrying = by_event["retrying"]
    assert (retrying["task_id"], retrying["outcome"], retrying["level"]) == (
        ids["shaky"],
        "failed",
        "warning",
    )
    assert retrying["retry_at"] and "RuntimeError: try later" in retrying["error"]
    summary = by_event["run"]
    assert (summary["claimed"], summary["dead"], summary["exit_code"]) == (4, 1, 1)
    assert summary["message"] == result.stdout.strip()
    handler = [r for r in records if r["logger"] == "tickrun.task.doomed"]
    assert handler and handler[0]["task_id"] == ids["doomed"]
    assert handler[0]["message"] == f"giving up on {ids['doomed']}"
    child = [r for r in records if r["logger"] == "tickrun.task.in_child"]  # a child process
    assert child and child[0]["task_id"] == ids["in_child"], result.stderr


def test_text_logs_name_the_task_of_handler_lines(db_url: str, project: Path) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref}
    task_id = int(tickrun("enqueue", "doomed", cwd=project, db=db_url, env=env).stdout)
    result = tickrun("run", cwd=project, db=db_url, env=env)
    assert f"tickrun.task.doomed: giving up on {task_id} [task {task_id}, attempt 1]" in (
        result.stderr
    )
    bad = tickrun("run", "--log-format", "xml", cwd=project, db=db_url, env=env)
    assert bad.returncode == 2 and "error: " in bad.stderr


TALKATIVE = """
from tickrun import App

app = App()


@app.task(context=True)
def in_thread(ctx):
    ctx.logger.info("info from the thread")
    ctx.logger.debug("debug from the thread")


@app.task(context=True, timeout=60)
def in_child(ctx):
    ctx.logger.info("info from the child")
    ctx.logger.debug("debug from the child")
"""


@pytest.mark.parametrize(
    ("flags", "env", "shown"),
    [
        ([], {}, {"info"}),  # the default: the README's ctx.logger.info example shows
        (["--log-level", "debug"], {}, {"info", "debug"}),
        ([], {"TICKRUN_LOG_LEVEL": "warning"}, set()),
        (["--log-level", "WARNING"], {"TICKRUN_LOG_LEVEL": "debug"}, set()),  # the flag wins
        (["--log-format", "json"], {}, {"info"}),
    ],
    ids=["default", "debug", "env-warning", "flag-over-env", "json"],
)
def test_log_level_of_the_handlers_lines_in_threads_and_child_processes(
    project: Path, flags: list[str], env: dict[str, str], shown: set[str]
) -> None:
    db = f"sqlite:///{project / 'tickrun.db'}"
    env = {"TICKRUN_APP": write_app(project, TALKATIVE), **env}
    assert tickrun("init", cwd=project, db=db).returncode == 0
    for name in ("in_thread", "in_child"):
        assert tickrun("enqueue", name, cwd=project, db=db, env=env).returncode == 0
    result = tickrun("run", *flags, cwd=project, db=db, env=env)
    assert result.returncode == 0, result.stderr
    for where in ("thread", "child"):
        for level in ("info", "debug"):
            assert (f"{level} from the {where}" in result.stderr) == (level in shown), (
                where,
                level,
                result.stderr,
            )
    assert "SELECT" not in result.stderr  # other libraries' INFO (SQLAlchemy's SQL) stays out
    # In text, the summary is on stdout, not repeated on stderr; JSON logs carry it.
    assert ("tickrun run " in result.stderr) == ("json" in flags)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--log-level", "loud"], {}, "invalid --log-level 'loud': use one of debug, info,"),
        ([], {"TICKRUN_LOG_LEVEL": "loud"}, "invalid TICKRUN_LOG_LEVEL 'loud'"),
        (["--log-format", "jsno"], {}, "invalid --log-format 'jsno': use one of text, json"),
        ([], {"TICKRUN_LOG_FORMAT": "jsno"}, "invalid TICKRUN_LOG_FORMAT 'jsno'"),
        ([], {"TICKRUN_PING_URL": "htps//hc-ping.com/x"}, "invalid TICKRUN_PING_URL 'htps//"),
        (["--ping-url", "x"], {}, "invalid --ping-url 'x'"),
        ([], {"TICKRUN_METRICS_FILE": "/nonexistent/x.prom"}, "TICKRUN_METRICS_FILE /nonexis"),
    ],
)
def test_a_bad_value_names_the_flag_or_variable_it_came_from(
    project: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """A typo in an environment variable blamed the flag nobody typed."""
    for command in ("run", "worker"):
        result = tickrun(command, *args, cwd=project, db="sqlite:///x.db", env=env)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and message in line, line
    assert list(project.iterdir()) == []


# -- pings ------------------------------------------------------------------------------------


def paths(receiver: Receiver) -> list[tuple[str, str]]:
    return [(r["path"], r["body"]) for r in receiver.requests]


def test_pings_start_then_success_or_fail_with_the_summary(
    db_url: str, project: Path, receiver: Receiver
) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref}
    url = receiver.url("/ping/0f4c-uuid")
    tickrun("enqueue", "fine", cwd=project, db=db_url, env=env)
    ok = tickrun("run", "--ping-url", url, cwd=project, db=db_url, env=env)
    assert ok.returncode == 0, ok.stderr
    assert paths(receiver) == [
        ("/ping/0f4c-uuid/start", ""),
        ("/ping/0f4c-uuid", ok.stdout.strip()),
    ]

    receiver.requests.clear()
    tickrun("enqueue", "doomed", cwd=project, db=db_url, env=env)
    failed = tickrun("run", cwd=project, db=db_url, env={**env, "TICKRUN_PING_URL": url})
    assert failed.returncode == 1
    assert paths(receiver) == [
        ("/ping/0f4c-uuid/start", ""),
        ("/ping/0f4c-uuid/fail", failed.stdout.strip()),
    ]

    receiver.requests.clear()  # a run that fails before it starts its work pings fail too
    broken = tickrun("run", "--ping-url", url, cwd=project, db="sqlite:///missing.db", env=env)
    assert broken.returncode == 2
    (start, fail) = paths(receiver)
    assert fail[0] == "/ping/0f4c-uuid/fail" and fail[1].startswith("error: ")


def test_a_failed_ping_is_a_warning_never_a_failed_run(
    db_url: str, engine: Engine, project: Path, receiver: Receiver
) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref}
    url = receiver.url("/ping/0f4c-secret-uuid")
    receiver.stop()  # nothing listens
    tickrun("enqueue", "fine", cwd=project, db=db_url, env=env)
    result = tickrun("run", "--ping-url", url, cwd=project, db=db_url, env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "ping failed" in line]
    assert len(warnings) == 2, result.stderr
    assert f"127.0.0.1:{receiver.port}/***" in warnings[0]
    assert "secret" not in result.stdout + result.stderr

    for bad_url in ("ftp://127.0.0.1/x", "127.0.0.1/nourl"):
        bad = tickrun("run", "--ping-url", bad_url, cwd=project, db=db_url, env=env)
        assert bad.returncode == 2, bad.stderr
        assert (
            bad.stderr.startswith("error: invalid --ping-url") and len(bad.stderr.splitlines()) == 1
        )
    with engine.connect() as conn:  # the bad ones wrote nothing
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == 1
    assert not os.path.exists(project / "missing.db")
