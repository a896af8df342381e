"""Alerts about dead tasks, on every database: the outbox row is written with the dead
transition, delivered by the run (and by later runs, with backoff, until it gets through) to a
real HTTP receiver on 127.0.0.1, a command or an ``@app.on_dead`` hook; a failed delivery never
changes the task or the exit code, and secrets in URLs are never printed."""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, func, select

from tests.conftest import tickrun, write_app
from tests.helpers.servers import SECRET, Receiver
from tickrun import App, Fail, UsageError, store
from tickrun.lifecycle import DEAD, Outcome
from tickrun.notify import Targets, check_url, mask_url, resolve_targets
from tickrun.runner import RunOptions, run
from tickrun.schema import alerts, runs

T0 = datetime(2026, 4, 6, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def new_app(db_url: str, **options: Any) -> App:
    app = App(database_url=db_url, **options)
    app.use_database(db_url)
    return app


def alert_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(alerts).order_by(alerts.c.id)))


def failing_app(db_url: str, receiver: Receiver, **options: Any) -> App:
    app = new_app(db_url, alert_webhook=receiver.url(), **options)

    @app.task(max_attempts=2, backoff=0)
    def flaky(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    @app.task
    def doomed(n: int) -> None:
        raise Fail(f"no way {n}")

    return app


# -- the outbox row is written with the dead transition -------------------------------------------


def test_a_dead_task_alerts_its_webhook_once_with_what_a_person_needs(
    db_url: str, receiver: Receiver
) -> None:
    app = failing_app(db_url, receiver)
    with freeze_time(T0):
        task_id = app.enqueue("flaky", {"n": 7}, key="flaky:7")
        ok = app.enqueue("doomed", {"n": 1})
        summary = run(app, RunOptions(worker="w1"))
    assert (summary.dead, summary.exit_code, summary.alerts_sent) == (2, 1, 2)
    assert "2 alerts sent" in summary.line()
    by_task = {doc["task_id"]: doc for doc in receiver.delivered()}
    assert sorted(by_task) == sorted([task_id, ok])
    doc = by_task[task_id]
    assert doc["event"] == "task.dead"
    assert (doc["task"], doc["queue"], doc["attempts"], doc["max_attempts"]) == (
        "flaky",
        "default",
        2,
        2,
    )
    assert doc["key"] == "flaky:7"
    assert "RuntimeError: boom 7" in doc["last_error"]
    assert doc["hint"] == f"tickrun show {task_id}"
    rows = alert_rows(app.engine)
    assert [(r.task_id, r.target, r.status, r.attempts) for r in rows] == [
        (r.task_id, "webhook", "delivered", 1) for r in rows
    ]
    (request,) = [r for r in receiver.requests if json.loads(r["body"])["task_id"] == task_id]
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Tickrun-Alert-Id"] == str(doc["alert_id"])


def test_no_target_no_alert_row(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def doomed() -> None:
        raise Fail("x")

    with freeze_time(T0):
        app.enqueue("doomed")
        assert run(app, RunOptions(worker="w1")).dead == 1
    assert alert_rows(app.engine) == []


def test_a_lease_that_expired_with_no_attempt_left_alerts_too(
    db_url: str, receiver: Receiver
) -> None:
    app = new_app(db_url, alert_webhook=receiver.url())

    @app.task(lease=30, max_attempts=1)
    def once() -> None:
        raise AssertionError("never runs again")

    with freeze_time(T0) as frozen:
        task_id = app.enqueue("once")
        store.claim(
            app.engine,
            names=["once"],
            queues=[],
            limit=10,
            worker="ghost",
            leases={"once": 30},
            now=T0,
        )
        frozen.move_to(T0 + timedelta(seconds=31))
        summary = run(app, RunOptions(worker="w1"))
    assert (summary.dead, summary.alerts_sent) == (1, 1)
    (doc,) = receiver.delivered()
    assert doc["task_id"] == task_id
    assert "lease expired" in doc["last_error"]


def test_an_outcome_whose_claim_was_taken_over_writes_no_alert(
    db_url: str, receiver: Receiver
) -> None:
    """The alert shares the dead transition's fate: a stale record writes neither."""
    app = new_app(db_url)

    @app.task(lease=30, max_attempts=1)
    def once() -> None:
        pass

    with freeze_time(T0):
        app.enqueue("once")
        leases = {"once": 30.0}
        (old,) = store.claim(
            app.engine, names=["once"], queues=[], limit=1, worker="a", leases=leases, now=T0
        ).tasks
        later = T0 + timedelta(seconds=31)
        store.claim(
            app.engine, names=["once"], queues=[], limit=1, worker="b", leases=leases, now=later
        )
        stale = store.Ended(old, Outcome.FAILED, DEAD, later, None, "late", None)
        written = store.record(app.engine, [stale], now=later, worker="a", alerts=["webhook"])
    assert written == set()
    # The newer claim found no attempt left: that one dead transition wrote no alert (no
    # target given to it), and the stale one wrote none either.
    assert alert_rows(app.engine) == []


# -- delivery failures: retried with backoff, never fatal -----------------------------------------


def test_a_receiver_down_then_up_gets_every_alert_once_after_the_backoff(
    db_url: str, receiver: Receiver
) -> None:
    receiver.stop()  # down: the port refuses connections
    app = failing_app(db_url, receiver)
    with freeze_time(T0) as frozen:
        ids = [app.enqueue("doomed", {"n": n}) for n in range(3)]
        first = run(app, RunOptions(worker="w1", fail_on="never"))
        assert (first.dead, first.exit_code) == (3, 0)  # the delivery failure changes nothing
        assert first.alerts_sent == 0 and first.alerts_failed >= 1
        rows = alert_rows(app.engine)
        assert {r.status for r in rows} == {"pending"} and len(rows) == 3
        # One try; the target is then left alone for a while: the others wait, untried or
        # marked "not tried", instead of costing a timeout each.
        tried = [r for r in rows if r.attempts]
        assert sum("not tried" not in r.last_error for r in tried) == 1
        for r in tried:
            assert SECRET not in r.last_error and "s3cr3t" not in r.last_error
            assert f"127.0.0.1:{receiver.port}/***" in r.last_error
            assert r.claimable_at > T0  # backoff

        receiver.start()  # up again
        frozen.move_to(T0 + timedelta(minutes=5))
        later = run(app, RunOptions(worker="w1"))
        assert later.alerts_sent == 3
        frozen.move_to(T0 + timedelta(hours=3))
        assert run(app, RunOptions(worker="w1")).alerts_sent == 0
    assert Counter(doc["task_id"] for doc in receiver.received()) == Counter(ids)
    assert {r.status for r in alert_rows(app.engine)} == {"delivered"}


def test_a_failing_receiver_is_tried_once_not_once_per_alert(
    db_url: str, receiver: Receiver
) -> None:
    receiver.status = 503
    app = failing_app(db_url, receiver)
    with freeze_time(T0):
        for n in range(4):
            app.enqueue("doomed", {"n": n})
        summary = run(app, RunOptions(worker="w1"))
    assert (summary.dead, summary.exit_code, summary.alerts_sent) == (4, 1, 0)
    assert len(receiver.requests) == 1
    rows = alert_rows(app.engine)
    assert {r.status for r in rows} == {"pending"} and len(rows) == 4
    assert sum("HTTP 503" in (r.last_error or "") for r in rows) == summary.alerts_failed


def test_a_lost_acknowledgement_means_a_duplicate_with_the_same_alert_id(
    db_url: str, receiver: Receiver
) -> None:
    """At least once: the receiver got the alert but its answer never arrived, so the next
    delivery sends it again; alert_id lets a receiver drop the copy."""
    receiver.drop = True
    app = failing_app(db_url, receiver)
    with freeze_time(T0) as frozen:
        task_id = app.enqueue("doomed", {"n": 1})
        assert run(app, RunOptions(worker="w1")).alerts_failed == 1
        receiver.drop = False
        frozen.move_to(T0 + timedelta(minutes=5))
        assert run(app, RunOptions(worker="w1")).alerts_sent == 1
    first, second = receiver.received()
    assert first == second and first["task_id"] == task_id
    assert [d["alert_id"] for d in receiver.delivered()] == [first["alert_id"]]


def test_slack_format_posts_text_slack_and_mattermost_accept(
    db_url: str, receiver: Receiver
) -> None:
    app = failing_app(db_url, receiver, alert_format="slack")
    with freeze_time(T0):
        task_id = app.enqueue("doomed", {"n": 3})
        run(app, RunOptions(worker="w1"))
    (body,) = receiver.delivered()
    assert list(body) == ["text"]
    assert f"task {task_id} doomed is dead after 1/5 attempts" in body["text"]
    assert "Fail: no way 3" in body["text"] and f"tickrun show {task_id}" in body["text"]


def test_a_command_gets_the_alert_as_json_on_stdin(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    script = (
        "import sys; data = sys.stdin.read(); "
        f"open({str(out)!r}, 'a').write(data + '\\n'); "
        "sys.exit(3 if 'fail-me' in data else 0)"
    )
    app = new_app(db_url, alert_command=[sys.executable, "-c", script])

    @app.task
    def doomed(word: str) -> None:
        raise Fail(word)

    with freeze_time(T0):
        ok = app.enqueue("doomed", {"word": "plain"})
        app.enqueue("doomed", {"word": "fail-me"})
        summary = run(app, RunOptions(worker="w1"))
    assert (summary.alerts_sent, summary.alerts_failed) == (1, 1)
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(d["last_error"] for d in docs) == ["Fail: fail-me", "Fail: plain"]
    rows = {r.task_id: r for r in alert_rows(app.engine)}
    assert rows[ok].status == "delivered"
    (failed,) = [r for r in rows.values() if r.status == "pending"]
    assert "exited 3" in failed.last_error


def test_an_on_dead_hook_is_called_and_its_exception_is_only_logged(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app(db_url)
    seen: list[dict[str, Any]] = []

    @app.on_dead
    def remember(alert: dict[str, Any]) -> None:
        seen.append(alert)
        if alert["last_error"] == "Fail: explode":
            raise ValueError("hook broke")

    @app.task
    def doomed(word: str) -> None:
        raise Fail(word)

    with freeze_time(T0):
        calm = app.enqueue("doomed", {"word": "calm"})
        app.enqueue("doomed", {"word": "explode"})
        summary = run(app, RunOptions(worker="w1", fail_on="never"))
    assert (summary.dead, summary.exit_code) == (2, 0)
    assert sorted(a["task_id"] for a in seen) == sorted([calm, calm + 1])
    assert "hook broke" in caplog.text
    assert (summary.alerts_sent, summary.alerts_failed) == (1, 1)
    rows = {r.task_id: r for r in alert_rows(app.engine)}
    assert rows[calm].status == "delivered"
    assert (
        rows[calm + 1].status == "pending" and "ValueError: hook broke" in rows[calm + 1].last_error
    )


# -- configuration ---------------------------------------------------------------------------


def test_targets_come_from_env_then_pyproject_then_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ALERT_WEBHOOK", "ALERT_FORMAT", "ALERT_COMMAND", "ALERT_TIMEOUT"):
        monkeypatch.delenv(f"TICKRUN_{name}", raising=False)
    app_values = {"alert_webhook": "http://127.0.0.1:9/app", "alert_timeout": 2}
    assert resolve_targets(app_values) == Targets(webhook="http://127.0.0.1:9/app", timeout=2.0)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tickrun]\nalert_webhook = "http://127.0.0.1:9/py"\nalert_format = "slack"\n'
    )
    assert resolve_targets(app_values).webhook == "http://127.0.0.1:9/py"
    assert resolve_targets(app_values).format == "slack"
    monkeypatch.setenv("TICKRUN_ALERT_WEBHOOK", "http://127.0.0.1:9/env")
    monkeypatch.setenv("TICKRUN_ALERT_TIMEOUT", "1s")
    found = resolve_targets(app_values, hook=True)
    assert (found.webhook, found.timeout, found.names) == (
        "http://127.0.0.1:9/env",
        1.0,
        ("webhook", "hook"),
    )


def test_urls_are_masked_down_to_scheme_and_host() -> None:
    assert mask_url(f"https://hooks.slack.com/services/{SECRET}") == "https://hooks.slack.com/***"
    assert mask_url("https://u:pw@hc-ping.com:8443/abc?x=1") == "https://u:***@hc-ping.com:8443/***"
    assert mask_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http//u:pw@host/x", "http//u:***@host/x"),
        ("htps://u:pw@host:80/x?y=1", "htps://u:***@host:80/x?y=1"),
        ("http://u:pw@host:port/x", "http://u:***@host:port/x"),
        ("hooks.slack.com/services/T/B/x", "hooks.slack.com/services/T/B/x"),
        ("http:///x", "http:///x"),
    ],
)
def test_an_invalid_url_is_shown_as_typed_but_for_its_password(url: str, shown: str) -> None:
    from tickrun.notify import password_masked  # new: the module's other tests run on 0.x too

    assert password_masked(url) == shown
    with pytest.raises(UsageError) as info:
        check_url(url, "alert webhook URL")
    assert f"invalid alert webhook URL {shown!r}:" in str(info.value)


def test_credentials_in_a_webhook_url_are_sent_as_basic_auth(
    db_url: str, receiver: Receiver
) -> None:
    """urllib took ``user:password@127.0.0.1`` for the host: every delivery failed."""
    url = receiver.url().replace("://", "://ops%40example.com:s3%2Fcr:t@", 1)
    app = new_app(db_url, alert_webhook=url)

    @app.task
    def doomed() -> None:
        raise Fail("gone")

    task_id = app.enqueue("doomed")
    summary = run(app, RunOptions(worker="w1"))
    assert (summary.alerts_sent, summary.alerts_failed) == (1, 0)
    (request,) = receiver.requests
    assert request["path"] == f"/services/{SECRET}"
    token = base64.b64encode(b"ops@example.com:s3/cr:t").decode()
    assert request["headers"]["Authorization"] == f"Basic {token}"
    assert json.loads(request["body"])["task_id"] == task_id
    assert Targets(webhook=url).describe("webhook") == (
        f"webhook http://ops%40example.com:***@127.0.0.1:{receiver.port}/*** (json)"
    )


JOBS = """
from tickrun import App, Fail

app = App()


@app.task
def doomed():
    raise Fail("gone")
"""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TICKRUN_ALERT_WEBHOOK": "ftp://127.0.0.1/x"}, "invalid alert webhook URL"),
        ({"TICKRUN_ALERT_WEBHOOK": "not a url"}, "invalid alert webhook URL"),
        ({"TICKRUN_ALERT_FORMAT": "xml"}, "invalid alert format 'xml'"),
        ({"TICKRUN_ALERT_COMMAND": "no-such-program-tickrun -x"}, "not found"),
        ({"TICKRUN_ALERT_TIMEOUT": "forever"}, "invalid alert timeout"),
        (
            {"TICKRUN_ALERT_TIMEOUT": "0"},
            "invalid alert timeout '0' (TICKRUN_ALERT_TIMEOUT): it must be longer than 0s",
        ),
        ({"TICKRUN_ALERT_TIMEOUT": "6m"}, "at most 300s"),
        (  # shown as typed, the password masked: the missing ":" must be visible
            {"TICKRUN_ALERT_WEBHOOK": "http//ops:hunter2@hooks.example.com/x"},
            "invalid alert webhook URL (TICKRUN_ALERT_WEBHOOK) 'http//ops:***@hooks.example.com/x'",
        ),
    ],
)
def test_bad_alert_settings_are_a_one_line_error_at_start(
    db_url: str, engine: Engine, project: Path, env: dict[str, str], message: str
) -> None:
    ref = write_app(project, JOBS)
    tickrun("enqueue", "doomed", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref, **env})
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line, line
    assert "hunter2" not in line
    assert result.stdout == ""
    with engine.connect() as conn:  # nothing written: no run recorded, the task untouched
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(alerts)).scalar_one() == 0


def test_alerts_lists_undelivered_ones_and_retry_sends_them_now(
    db_url: str, project: Path, receiver: Receiver
) -> None:
    ref = write_app(project, JOBS)
    env = {"TICKRUN_APP": ref, "TICKRUN_ALERT_WEBHOOK": receiver.url()}
    receiver.status = 500
    tickrun("enqueue", "doomed", cwd=project, db=db_url, env=env)
    result = tickrun("run", cwd=project, db=db_url, env=env)
    assert result.returncode == 1, result.stderr  # a task became dead; delivery is apart
    assert "1 alert delivery failed" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "HTTP 500" in result.stderr

    listed = tickrun("alerts", "--json", cwd=project, db=db_url, env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert set(row) == {
        "id",
        "kind",
        "target",
        "task_id",
        "task",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "last_error",
    }
    assert (row["kind"], row["target"], row["status"], row["attempts"]) == (
        "dead",
        "webhook",
        "failed",
        1,
    )
    assert SECRET not in listed.stdout
    table = tickrun("alerts", cwd=project, db=db_url, env=env)
    assert "failed" in table.stdout and SECRET not in table.stdout

    receiver.status = 200
    retried = tickrun("alerts", "retry", "--all", cwd=project, db=db_url, env=env)
    assert retried.returncode == 0, retried.stderr
    assert "delivered 1, failed 0; 0 still undelivered" in retried.stdout
    assert [d["task_id"] for d in receiver.delivered()] == [row["task_id"]]
    empty = tickrun("alerts", "--json", cwd=project, db=db_url, env=env)
    assert json.loads(empty.stdout) == []
    missing = tickrun("alerts", "retry", "999999", cwd=project, db=db_url, env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no pending alert")


def test_prune_deletes_alerts_delivered_long_ago_and_keeps_undelivered_ones(
    db_url: str, receiver: Receiver
) -> None:
    from tickrun import maintenance

    app = failing_app(db_url, receiver)
    with freeze_time(T0) as frozen:
        app.enqueue("doomed", {"n": 1})
        run(app, RunOptions(worker="w1"))  # delivered at T0
        receiver.status = 503
        frozen.move_to(T0 + timedelta(days=3))
        app.enqueue("doomed", {"n": 2})
        run(app, RunOptions(worker="w1"))  # not delivered
        frozen.move_to(T0 + timedelta(days=10))
        maintenance.prune(app.engine, T0 + timedelta(days=10), older_than=5 * 86400)
    (left,) = alert_rows(app.engine)
    assert left.status == "pending" and left.created_at == T0 + timedelta(days=3)


def test_check_alert_sends_the_problems_as_one_alert(
    db_url: str, project: Path, receiver: Receiver
) -> None:
    ref = write_app(project, JOBS)
    plain = {"TICKRUN_APP": ref}
    tickrun("enqueue", "doomed", cwd=project, db=db_url, env=plain)
    assert tickrun("run", cwd=project, db=db_url, env=plain).returncode == 1  # no target: no alert

    none = tickrun("check", "--alert", cwd=project, db=db_url, env=plain)
    assert none.returncode == 2 and none.stderr.startswith("error: no alert target configured")
    assert receiver.requests == []

    env = {**plain, "TICKRUN_ALERT_WEBHOOK": receiver.url(), "TICKRUN_ALERT_FORMAT": "slack"}
    found = tickrun("check", "--alert", cwd=project, db=db_url, env=env)
    assert found.returncode == 1, found.stderr
    (body,) = receiver.delivered()
    assert body["text"].startswith("tickrun check found 1 problem(s): ")
    assert found.stdout.splitlines()[0] in body["text"]
    listed = json.loads(
        tickrun("alerts", "--all", "--json", cwd=project, db=db_url, env=env).stdout
    )
    assert [(r["kind"], r["task_id"], r["status"]) for r in listed] == [
        ("check", None, "delivered")
    ]

    quiet = tickrun("check", "--alert", "--max-dead", "5", cwd=project, db=db_url, env=env)
    assert quiet.returncode == 0 and len(receiver.requests) == 1  # no problem, no alert
