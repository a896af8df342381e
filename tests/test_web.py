"""``tickrun web`` over HTTP, on every database: every page and action, status codes, the
CSRF and token refusals, escaping, and that a page shows what ``tickrun ... --json`` prints.

Pages are driven in-process through Starlette's test client with a frozen clock (the state is
built as in test_inspect.py); the command itself runs as a real process where it matters
(start-up refusals, serving, stopping). Browser tests are in test_web_browser.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine

pytest.importorskip("starlette", reason="the web extra is not installed: pip install '.[web]'")

from starlette.testclient import TestClient  # noqa: E402

from tests.conftest import ROOT, cli_env, tickrun, write_app  # noqa: E402
from tests.helpers.cli import at_t0  # noqa: E402
from tests.helpers.seeds import (  # noqa: E402
    MIN,
    T0,
    add_attempt,
    add_run,
    add_task,
    mixed_state,
    task_row,
)
from tests.helpers.servers import Server  # noqa: E402
from tickrun import activity, listings  # noqa: E402
from tickrun.app import App  # noqa: E402
from tickrun.database import open_engine  # noqa: E402
from tickrun.web.app import create_app  # noqa: E402
from tickrun.web.security import Guard  # noqa: E402

TOKEN = "s3cret-token-of-the-test-0123456789"
XSS = "<script>window.__pwned = 1</script>"
PAGES = ["/", "/stats", "/due", "/failures", "/dlq", "/schedules", "/runs"]


@pytest.fixture
def frozen() -> Iterator[None]:
    with freeze_time(T0):
        yield


def client(engine: Engine, **options: Any) -> TestClient:
    return TestClient(create_app(engine, **options), base_url="http://127.0.0.1:8080")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def ids_in(html: str) -> list[int]:
    """The task ids a listing page links, in order."""
    return [int(i) for i in re.findall(r'data-field="id"><a href="/tasks/(\d+)"', html)]


def error_line(html: str) -> str:
    found = re.search(r'<p class="error" id="error">(.*?)</p>', html, re.S)
    assert found, html[:2000]
    return unescape(found.group(1))


# -- pages ---------------------------------------------------------------------------------


def test_every_page_answers_on_an_empty_database(db_url: str, engine: Engine, frozen: None) -> None:
    web = client(engine)
    for path in PAGES:
        response = web.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "(nothing due)" in web.get("/due").text
    assert "(the dead-letter queue is empty)" in web.get("/dlq").text
    assert "(no run recorded)" in web.get("/runs").text
    assert web.get("/static/tickrun.js").status_code == 200
    assert web.get("/static/tickrun.css").status_code == 200


def test_pages_show_what_the_cli_prints(db_url: str, engine: Engine, frozen: None) -> None:
    ids = mixed_state(engine)
    failed = add_task(engine, name="sync", status="retrying", attempts=2, run_at=T0 + MIN)
    add_attempt(engine, failed, 1, "failed", T0 - 30 * MIN, T0 - 29 * MIN)
    add_attempt(engine, failed, 2, "timeout", T0 - 5 * MIN, T0 - 4 * MIN, "timeout")
    add_run(engine, T0 - 20 * MIN)
    add_run(engine, T0 - 2 * 3600 * MIN)
    web = client(engine)

    def cli_ids(*args: str) -> list[int]:
        result = at_t0(db_url, *args, "--json")
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.stdout)]

    assert ids_in(web.get("/due").text) == cli_ids("due") == [ids["due"]]
    assert ids_in(web.get("/dlq").text) == cli_ids("dlq") == [ids["dead"]]
    assert ids_in(web.get("/failures").text) == cli_ids("failures")
    assert ids_in(web.get("/failures?since=10m&task=sync").text) == cli_ids(
        "failures", "--since", "10m", "--task", "sync"
    )
    runs = web.get("/runs").text
    assert runs.count("<tr>") - 1 == len(cli_ids("runs"))

    overview = web.get("/").text
    assert '<b id="dead-count">1</b>' in overview
    assert '<b id="due-count">1</b>' in overview
    assert "runs in the last hour" in overview and "<b>1</b><span>runs in the last hour" in overview
    assert f'href="/tasks/{ids["retrying"]}"' in overview  # a recent failure, linked
    assert "<svg" in overview and "<rect" in overview

    stats = web.get("/stats?since=2h").text
    cli_stats = json.loads(at_t0(db_url, "stats", "--since", "2h", "--json").stdout)
    for row in cli_stats:
        assert f'?task={row["task"]}"' in stats
    assert stats.count("<tr>") - 1 == len(cli_stats)
    assert web.get("/stats?since=nope").status_code == 400

    task = web.get(f"/tasks/{ids['dead']}").text
    assert "Traceback (most recent call last):" in task and "RuntimeError: gave up" in task
    history = task.split("<h2>Attempts</h2>")[1]
    assert "timeout" in history
    payload = web.get(f"/tasks/{ids['due']}").text
    assert "&#34;user_id&#34;: 1" in payload or "&quot;user_id&quot;: 1" in payload
    assert "UTC" in payload and "ago" in payload  # times in UTC, and relative


def test_listings_filter_by_task_and_queue_and_paginate(
    db_url: str, engine: Engine, frozen: None
) -> None:
    dead = [
        add_task(
            engine,
            name="a" if i % 2 else "b",
            queue="mail" if i < 4 else "default",
            status="dead",
            finished_at=T0 - (i + 1) * MIN,
            last_error="boom",
        )
        for i in range(7)
    ]
    web = client(engine, page_size=3)
    assert ids_in(web.get("/dlq").text) == dead[:3]
    second = web.get("/dlq?page=2").text
    assert ids_in(second) == dead[3:6]
    assert 'rel="prev"' in second and 'rel="next"' in second
    last = web.get("/dlq?page=3").text
    assert ids_in(last) == dead[6:] and 'rel="next"' not in last
    assert ids_in(web.get("/dlq?task=a&per=10").text) == [d for i, d in enumerate(dead) if i % 2]
    assert ids_in(web.get("/dlq?queue=mail&per=10").text) == dead[:4]
    assert ids_in(web.get("/dlq?queue=mail&task=b&per=10").text) == [dead[0], dead[2]]
    cli = json.loads(at_t0(db_url, "dlq", "--queue", "mail", "--task", "b", "--json").stdout)
    assert [r["id"] for r in cli] == [dead[0], dead[2]]
    assert ids_in(web.get("/dlq?page=9").text) == []


def test_new_listing_fields_show_without_template_changes(
    db_url: str, engine: Engine, frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Later versions add fields (why a due task is held; a task's result and parent): the
    pages render whatever the read models return."""
    parent = add_task(engine, name="job")
    child = add_task(engine, name="job", status="succeeded")
    real_due, real_show = listings.due, listings.show

    def due(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [{**row, "held": "rate limit <3/s>"} for row in real_due(*args, **kwargs)]

    def show(engine: Engine, task_id: int) -> listings.TaskDetail:
        detail = real_show(engine, task_id)
        fields = {**detail.fields, "result": {"sent": XSS}, "parent_id": parent}
        return listings.TaskDetail(fields, detail.history, detail.last_failure)

    monkeypatch.setattr(listings, "due", due)
    monkeypatch.setattr(listings, "show", show)
    web = client(engine)
    page = web.get("/due").text
    assert "<th>held</th>" in page and "rate limit &lt;3/s&gt;" in page
    task = web.get(f"/tasks/{child}").text
    assert "<h2>Result</h2>" in task and "&lt;script&gt;" in task and XSS not in task
    assert f'<a href="/tasks/{parent}">{parent}</a>' in task


def test_schedules_page_lists_the_applications_schedules(
    db_url: str, engine: Engine, frozen: None
) -> None:
    app = App()

    @app.schedule("*/5 * * * *", name="every5")
    def tick() -> None: ...

    page = client(engine, app=app).get("/schedules").text
    assert "every5" in page and "*/5 * * * *" in page and "next_run_at" in page
    assert "2026-03-02 12:05:00 UTC" in page
    assert "--app MODULE:ATTR" in client(engine).get("/schedules").text


def test_database_values_are_escaped_everywhere(db_url: str, engine: Engine, frozen: None) -> None:
    dead = add_task(
        engine,
        name=f"job{XSS}",
        queue=f"q{XSS}",
        key=f"k{XSS}",
        payload=json.dumps({"html": XSS, "img": '<img src=x onerror="alert(1)">'}),
        status="dead",
        last_error=f"ValueError: {XSS}",
        last_traceback=f"Traceback (most recent call last):\nValueError: {XSS}",
    )
    add_attempt(
        engine,
        dead,
        1,
        "failed",
        T0 - 3 * MIN,
        T0 - 2 * MIN,
        f"ValueError: {XSS}",
        traceback=f"Traceback:\n{XSS}",
    )
    due = add_task(engine, name=f"due{XSS}", key=f"d{XSS}", payload=json.dumps({"x": XSS}))
    web = client(engine)
    for path in [
        *PAGES,
        f"/tasks/{dead}",
        f"/tasks/{due}",
        "/dlq?task=" + XSS,
        "/failures?queue=" + XSS,
    ]:
        html = web.get(path).text
        assert "<script>window" not in html, path
        assert "<img src=x" not in html, path
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in web.get(f"/tasks/{dead}").text


def test_bad_input_is_a_one_line_error_page(db_url: str, engine: Engine, frozen: None) -> None:
    web = client(engine)
    cases = {
        "/tasks/999999": (404, "no task with id 999999"),
        "/tasks/abc": (404, "no task with id 'abc'"),
        "/due?page=0": (400, "page must be at least 1, not 0"),
        "/due?page=x": (400, "page must be a whole number"),
        "/dlq?per=100000": (400, "per must be between 1 and 500"),
        "/failures?since=forever": (400, "invalid duration"),
        "/?window=1y": (400, "unknown window"),
        "/nowhere": (404, "Not Found"),
    }
    for path, (status, text) in cases.items():
        response = web.get(path)
        assert response.status_code == status, (path, response.status_code)
        line = error_line(response.text)
        assert text in line, (path, line)
        assert "Traceback" not in response.text
    assert web.get("/dlq/retry").status_code == 405


def test_an_unreachable_database_is_a_503_page_not_a_traceback(tmp_path: Path) -> None:
    engine = open_engine("postgresql+psycopg://nobody:pw@127.0.0.1:1/none?connect_timeout=2")
    response = client(engine).get("/due")
    assert response.status_code == 503
    line = error_line(response.text)
    assert "pw" not in line and "Traceback" not in response.text


# -- actions -------------------------------------------------------------------------------


def test_retry_from_the_dlq_moves_the_task_back_to_pending(
    db_url: str, engine: Engine, frozen: None
) -> None:
    ids = mixed_state(engine)
    web = client(engine, allow_actions=True)
    page = web.get("/dlq").text
    assert ids_in(page) == [ids["dead"]]
    response = web.post(
        "/dlq/retry",
        data={"csrf": csrf_of(page), "id": str(ids["dead"]), "next": "/dlq"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/dlq"
    row = task_row(engine, ids["dead"])
    assert row.status == "pending" and row.attempts == 0
    after = web.get("/dlq").text
    assert ids_in(after) == []
    assert f"retried 1 dead task: back to pending, due now ({ids['dead']})" in after
    assert "retried" not in web.get("/dlq").text  # the notice is shown once


def test_behind_a_proxy_prefix_links_and_redirects_keep_it(
    db_url: str, engine: Engine, frozen: None
) -> None:
    """uvicorn --root-path puts the prefix in front of the path, as a proxy that strips it
    expects: links and the redirect after an action carry it, filters included."""
    ids = mixed_state(engine)
    web = TestClient(
        create_app(engine, allow_actions=True),
        base_url="http://127.0.0.1:8080",
        root_path="/tickrun",
    )
    page = web.get("/dlq?task=sync")
    assert page.status_code == 200
    assert 'href="/tickrun/static/tickrun.css"' in page.text
    assert f'href="/tickrun/tasks/{ids["dead"]}"' in page.text
    assert 'name="next" value="/dlq?task=sync"' in page.text
    response = web.post(
        "/dlq/retry",
        data={"csrf": csrf_of(page.text), "id": str(ids["dead"]), "next": "/dlq?task=sync"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/tickrun/dlq?task=sync"


def test_retry_all_and_purge_by_task_and_age(db_url: str, engine: Engine, frozen: None) -> None:
    old = add_task(engine, name="a", status="dead", finished_at=T0 - 40 * 24 * 60 * MIN)
    young = add_task(engine, name="a", status="dead", finished_at=T0 - MIN)
    other = add_task(engine, name="b", status="dead")
    web = client(engine, allow_actions=True)
    csrf = csrf_of(web.get("/dlq").text)
    web.post("/dlq/purge", data={"csrf": csrf, "task": "a", "older_than": "30d"})
    assert set(ids_in(web.get("/dlq").text)) == {young, other}
    response = web.post("/dlq/purge", data={"csrf": csrf, "older_than": "soon"})
    assert response.status_code == 400 and "invalid duration" in error_line(response.text)
    web.post("/dlq/retry", data={"csrf": csrf, "all": "1", "task": "b"})
    assert ids_in(web.get("/dlq").text) == [young]
    assert task_row(engine, other).status == "pending"
    del old


def test_cancel_from_the_due_page(db_url: str, engine: Engine, frozen: None) -> None:
    waiting = add_task(engine, name="a")
    running = add_task(engine, name="a", status="running", attempts=1, lease_until=T0 - MIN)
    web = client(engine, allow_actions=True)
    page = web.get("/due").text
    assert page.count('action="/cancel"') == 1  # only the waiting task offers cancel
    web.post(
        "/cancel",
        data={"csrf": csrf_of(page), "id": [str(waiting), str(running)], "next": "/due"},
        follow_redirects=False,
    )
    notice = web.get("/due").text
    assert f"cancelled 1 task ({waiting}); left alone: {running} is running" in notice
    assert task_row(engine, waiting).status == "cancelled"
    assert task_row(engine, running).status == "running"
    response = web.post("/cancel", data={"csrf": csrf_of(page), "id": "12x"})
    assert response.status_code == 400


def test_actions_need_a_valid_csrf_token(db_url: str, engine: Engine, frozen: None) -> None:
    ids = mixed_state(engine)
    web = client(engine, allow_actions=True)
    csrf = csrf_of(web.get("/dlq").text)
    attempts = [
        {"id": str(ids["dead"])},
        {"id": str(ids["dead"]), "csrf": ""},
        {"id": str(ids["dead"]), "csrf": "0" * 64},
        {"id": str(ids["dead"]), "csrf": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")},
    ]
    for data in attempts:
        response = web.post("/dlq/retry", data=data)
        assert response.status_code == 403, data
        assert "CSRF" in error_line(response.text)
    # A token is only good with the cookie it was made for: another browser's is refused.
    stranger = client(engine, allow_actions=True)
    stranger.get("/dlq")
    assert (
        stranger.post("/dlq/retry", data={"id": str(ids["dead"]), "csrf": csrf}).status_code == 403
    )
    # Nor is it good in another process (its secret is per process).
    other = client(engine, allow_actions=True)
    other.cookies = web.cookies
    assert other.post("/dlq/retry", data={"id": str(ids["dead"]), "csrf": csrf}).status_code == 403
    assert task_row(engine, ids["dead"]).status == "dead"


def test_actions_are_refused_unless_allowed(db_url: str, engine: Engine, frozen: None) -> None:
    ids = mixed_state(engine)
    web = client(engine)
    page = web.get("/dlq").text
    assert 'action="/dlq/retry"' not in page and "--allow-actions" in page
    guard = Guard(None, secret=b"k" * 32)
    web = client(engine, guard=guard)
    web.get("/dlq")
    csrf = guard.csrf_token(web.cookies["tickrun_csrf"])
    for path, data in [
        ("/dlq/retry", {"id": str(ids["dead"])}),
        ("/dlq/purge", {}),
        ("/cancel", {"id": str(ids["due"])}),
    ]:
        response = web.post(path, data={**data, "csrf": csrf})
        assert response.status_code == 403, path
        assert "--allow-actions" in error_line(response.text)
    assert task_row(engine, ids["dead"]).status == "dead"
    assert task_row(engine, ids["due"]).status == "pending"


def test_the_token_guards_every_page_and_action(db_url: str, engine: Engine, frozen: None) -> None:
    ids = mixed_state(engine)
    web = client(engine, allow_actions=True, token=TOKEN)
    for path in [*PAGES, f"/tasks/{ids['dead']}"]:
        response = web.get(path)
        assert response.status_code == 401, path
        assert 'name="token"' in response.text and "RuntimeError" not in response.text
    assert web.get("/static/tickrun.css").status_code == 200
    refused = web.post("/dlq/retry", data={"id": str(ids["dead"]), "csrf": "x"})
    assert refused.status_code == 401
    assert task_row(engine, ids["dead"]).status == "dead"

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert web.get("/dlq", headers=bearer).status_code == 200
    assert web.get("/dlq", headers={"Authorization": "Bearer wrong"}).status_code == 401

    wrong = web.post("/login", data={"token": "wrong"})
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    login = web.post("/login", data={"token": TOKEN, "next": "/dlq"}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/dlq"
    cookie = web.cookies["tickrun_session"]
    assert TOKEN not in cookie
    page = web.get("/dlq")
    assert page.status_code == 200 and ids_in(page.text) == [ids["dead"]]
    web.post("/dlq/retry", data={"id": str(ids["dead"]), "csrf": csrf_of(page.text)})
    assert task_row(engine, ids["dead"]).status == "pending"

    # The login's `next` never leads off the dashboard.
    away = web.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert away.headers["location"] == "/"
    web.post("/logout", data={"csrf": csrf_of(page.text)})
    assert web.get("/dlq").status_code == 401


def test_requests_for_another_host_name_are_refused(db_url: str, engine: Engine) -> None:
    web = TestClient(
        create_app(engine, allowed_hosts={"127.0.0.1", "localhost"}),
        base_url="http://attacker.example:8080",
    )
    response = web.get("/")
    assert response.status_code == 400 and "Host" in response.text
    assert web.get("/", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert web.get("/", headers={"Host": "localhost"}).status_code == 200


# -- read models the dashboard added --------------------------------------------------------


def test_throughput_counts_attempts_per_bucket(db_url: str, engine: Engine) -> None:
    task = add_task(engine, name="a", status="dead")
    for minutes, outcome in [
        (5, "succeeded"),
        (6, "failed"),
        (25, "succeeded"),
        (59, "lost"),
        (61, "succeeded"),
    ]:
        add_attempt(engine, task, 1, outcome, None, T0 - minutes * MIN)
    buckets = activity.throughput(engine, T0, window=3600, buckets=4)
    assert [(b.succeeded, b.failed) for b in buckets] == [(0, 1), (0, 0), (1, 0), (1, 1)]
    assert buckets[0].start == T0 - 60 * MIN and buckets[-1].end == T0
    # Any number of buckets (the CASE tree is not only for powers of two).
    for n in (1, 3, 7, 60):
        counted = activity.throughput(engine, T0, window=3600, buckets=n)
        assert len(counted) == n
        assert sum(b.succeeded for b in counted) == 2 and sum(b.failed for b in counted) == 2
    one_per_minute = activity.throughput(engine, T0, window=3600, buckets=60)
    assert (one_per_minute[55].succeeded, one_per_minute[55].failed) == (1, 0)  # T0 - 5 min
    assert (one_per_minute[54].succeeded, one_per_minute[54].failed) == (0, 1)  # T0 - 6 min
    assert one_per_minute[1].failed == 1  # T0 - 59 min, the "lost" attempt


def test_queues_and_runs(db_url: str, engine: Engine, frozen: None) -> None:
    add_task(engine, name="a", queue="mail", run_at=T0 - 3 * MIN)
    add_task(engine, name="a", queue="mail", status="dead")
    add_task(engine, name="b", queue="media", run_at=T0 + MIN)
    rows = {r["queue"]: r for r in activity.queues(engine, T0)}
    assert rows["mail"]["due"] == 1 and rows["mail"]["dead"] == 1 and rows["mail"]["pending"] == 1
    assert rows["mail"]["oldest_due_age_s"] == 180.0
    assert rows["media"]["due"] == 0 and rows["media"]["oldest_due_age_s"] is None
    assert activity.status_counts(engine) == {
        "pending": 2,
        "running": 0,
        "retrying": 0,
        "succeeded": 0,
        "dead": 1,
        "cancelled": 0,
    }
    add_run(engine, T0 - 10 * MIN)
    add_run(engine, T0 - 3 * 60 * MIN)
    assert activity.count_runs(engine, T0, since=3600) == 1
    result = at_t0(db_url, "runs", "--json")
    data = json.loads(result.stdout)
    assert [list(r) for r in data] == [activity.RUNS_FIELDS] * 2
    assert len(json.loads(at_t0(db_url, "runs", "--since", "1h", "--json").stdout)) == 1
    assert "started" in at_t0(db_url, "runs").stdout


def test_failures_and_dlq_filter_by_queue_on_the_cli(db_url: str, engine: Engine) -> None:
    ids = mixed_state(engine)
    assert json.loads(at_t0(db_url, "dlq", "--queue", "nope", "--json").stdout) == []
    assert [
        r["id"] for r in json.loads(at_t0(db_url, "dlq", "--queue", "default", "--json").stdout)
    ] == [ids["dead"]]
    assert json.loads(at_t0(db_url, "failures", "--queue", "nope", "--json").stdout) == []
    result = at_t0(db_url, "dlq", "--queue", "default", "purge")
    assert result.exit_code == 2 and "after the subcommand" in result.stderr


# -- the command -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tickrun_web_serves_until_sigterm(db_url: str, engine: Engine, project: Path) -> None:
    mixed_state(engine)
    server = Server(project, db_url, "--root-path", "/tickrun")
    try:
        status, html = server.get("/dlq")
        assert status == 200 and "RuntimeError: gave up" in html
        assert 'href="/tickrun/static/tickrun.css"' in html
        assert server.get("/static/tickrun.js")[0] == 200
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_tickrun_web_start_up_refusals(db_url: str, project: Path) -> None:
    def web(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return tickrun("web", *args, cwd=project, db=db_url, env=env, timeout=60)

    def one_line(result: subprocess.CompletedProcess[str]) -> str:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]

    refused = web("--bind", "0.0.0.0:0", "--allow-actions")
    assert refused.returncode == 2
    assert "needs TICKRUN_WEB_TOKEN" in one_line(refused)
    every_interface = web("--bind", ":0", "--allow-actions")
    assert "--allow-actions on 0.0.0.0, which is not a loopback" in one_line(every_interface)
    short = web("--allow-actions", env={"TICKRUN_WEB_TOKEN": "abc"})
    assert short.returncode == 2 and "too short" in one_line(short)
    for bind in ("nonsense", "127.0.0.1:99999", "::1:8080", "[::1]8080"):
        bad = web("--bind", bind)
        assert bad.returncode == 2 and "invalid --bind" in one_line(bad), bind
    bad_root = web("--root-path", "tickrun")
    assert bad_root.returncode == 2 and "--root-path" in one_line(bad_root)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = web("--bind", f"127.0.0.1:{port}")
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in one_line(busy)


def test_tickrun_web_needs_the_schema(tmp_path: Path, project: Path) -> None:
    db = f"sqlite:///{tmp_path / 'fresh.db'}"
    (tmp_path / "fresh.db").touch()
    result = tickrun("web", cwd=project, db=db)
    assert result.returncode == 2 and "tickrun init" in result.stderr
    assert "Traceback" not in result.stderr


def test_notices_say_who_can_reach_what(project: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert tickrun("init", cwd=project, db=db).returncode == 0
    server = Server(project, db, "--allow-actions")
    try:
        assert server.get("/")[0] == 200
    finally:
        code, err = server.stop()
    assert code == 0
    assert "notice: actions are on without TICKRUN_WEB_TOKEN" in err
    server = Server(project, db, "--allow-actions", env={"TICKRUN_WEB_TOKEN": TOKEN})
    try:
        assert server.get("/")[0] == 401
    finally:
        code, err = server.stop()
    assert "notice" not in err


def test_bind_to_a_port_alone_serves_every_interface_and_says_so(
    project: Path, tmp_path: Path
) -> None:
    """``--bind :PORT`` said "serving on  without TICKRUN_WEB_TOKEN" (an empty host)."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert tickrun("init", cwd=project, db=db).returncode == 0
    server = Server(project, db, "--bind", ":0")  # the last --bind wins
    try:
        assert server.url.startswith("http://0.0.0.0:")
        assert server.get("/")[0] == 200
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "notice: serving on 0.0.0.0 without TICKRUN_WEB_TOKEN" in err, err


def test_schedules_come_from_the_configured_application(db_url: str, project: Path) -> None:
    ref = write_app(
        project,
        """
        from tickrun import App
        app = App()

        @app.schedule("0 9 * * 1", tz="Europe/Paris", name="weekly")
        def digest() -> None: ...
        """,
    )
    server = Server(project, db_url, env={"TICKRUN_APP": ref})
    try:
        status, html = server.get("/schedules")
    finally:
        server.stop()
    assert status == 200 and "weekly" in html and "Europe/Paris" in html


def test_the_wheel_ships_templates_and_static_files(tmp_path: Path, project: Path) -> None:
    """What `pip install 'tickrun[web]'` gets: a wheel holding the templates, the script and
    the stylesheet, not only the Python modules; and the dashboard served from that
    installed copy, not from this checkout."""
    out = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = out.glob("tickrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("base.html", "overview.html", "task.html", "dlq.html", "_macros.html"):
        assert f"tickrun/web/templates/{name}" in names
    for name in ("tickrun.js", "tickrun.css", "favicon.svg"):
        assert f"tickrun/web/static/{name}" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert 'extra == "web"' in text

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(site)}  # before the editable install of this checkout
    where = subprocess.run(
        [sys.executable, "-c", "import tickrun.web.app as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        cwd=project,
        env=cli_env(None, env),
    )
    assert where.stdout.strip().startswith(str(site)), where
    db = f"sqlite:///{tmp_path / 'w.db'}"
    assert tickrun("init", cwd=project, db=db).returncode == 0
    server = Server(project, db, env=env)
    try:
        assert server.get("/")[0] == 200
        assert server.get("/static/tickrun.css")[0] == 200
    finally:
        assert server.stop()[0] == 0


def test_the_core_never_imports_the_web_framework(project: Path) -> None:
    code = (
        "import sys, tickrun.cli, tickrun.listings, tickrun.runner; "
        "print(sorted(m for m in ('starlette', 'jinja2', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_token_check_does_not_leak_timing_shortcuts() -> None:
    guard = Guard(TOKEN)
    assert guard.allowed({"authorization": f"Bearer {TOKEN}"}, {})
    assert guard.allowed({"authorization": f"bearer  {TOKEN} "}, {})
    assert not guard.allowed({"authorization": f"Basic {TOKEN}"}, {})
    assert not guard.allowed({}, {"tickrun_session": TOKEN})
    assert guard.allowed({}, {"tickrun_session": guard.session_value()})
    assert Guard(None).allowed({}, {})
