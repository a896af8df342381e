"""Seeing and repairing the queue, on every database: due, failures, dlq (retry, purge), show,
stats, cancel, prune, check, doctor.

Most tests build a known state by inserting rows directly, freeze the clock, and run the CLI
in-process through tickrun's own ``main`` (so errors and exit codes are the real ones); a few
run the real ``tickrun`` in subprocesses.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from freezegun import freeze_time
from sqlalchemy import Engine, func, insert, select

from tests.conftest import cli_env, tickrun, tickruns, write_app
from tests.helpers.cli import COMMANDS_NEEDING_SCHEMA, at_t0, invoke
from tests.helpers.seeds import MIN, SEC, T0, add_attempt, add_run, add_task, mixed_state, task_row
from tickrun import activity, doctor, listings, maintenance, store
from tickrun.output import Column, fitted_table
from tickrun.schema import SCHEMA_VERSION, attempts, runs, tasks

CONTRACT = {
    "due": listings.DUE_FIELDS,
    "failures": listings.FAILURE_FIELDS,
    "dlq": listings.DLQ_FIELDS,
    "stats": listings.STATS_FIELDS + listings.STATS_WINDOW_FIELDS,
}


# -- helpers -------------------------------------------------------------------------------


def snapshot(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(tasks).order_by(tasks.c.id))],
            [tuple(r) for r in conn.execute(select(attempts).order_by(attempts.c.id))],
        )


def n_attempts(engine: Engine, task_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(attempts).where(attempts.c.task_id == task_id)
        ).scalar_one()


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- listings: fields and formats ----------------------------------------------------------


@pytest.mark.parametrize("command", sorted(CONTRACT))
def test_listing_json_and_csv_carry_exactly_the_contract_fields(
    db_url: str, engine: Engine, command: str
) -> None:
    mixed_state(engine)
    fields = CONTRACT[command]

    result = at_t0(db_url, command, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list) and data
    for obj in data:
        assert list(obj) == fields
        for name, value in obj.items():
            if name.endswith("_at") and value is not None:
                assert datetime.fromisoformat(value).utcoffset() == timedelta(0), value
    assert json.loads(at_t0(db_url, command, "--format", "json").stdout) == data

    result = at_t0(db_url, command, "--format", "csv")
    assert result.exit_code == 0, result.output
    parsed = list(csv.reader(io.StringIO(result.stdout)))
    assert parsed[0] == fields
    assert len(parsed) == len(data) + 1
    assert all(len(row) == len(fields) for row in parsed)


def test_empty_listings(db_url: str) -> None:
    for command in CONTRACT:
        assert json.loads(at_t0(db_url, command, "--json").stdout) == []
        assert at_t0(db_url, command, "--format", "csv").stdout.strip() == ",".join(
            CONTRACT[command]
        )
    assert at_t0(db_url, "due").stdout.strip() == "(nothing due)"
    assert at_t0(db_url, "dlq").stdout.strip() == "(the dead-letter queue is empty)"


def test_due_lists_what_runs_would_claim_in_claim_order(db_url: str, engine: Engine) -> None:
    low_old = add_task(engine, name="a", run_at=T0 - 10 * MIN)
    high = add_task(engine, name="b", priority=5, run_at=T0 - MIN)
    low_new = add_task(engine, name="a", run_at=T0 - 2 * MIN)
    tie = add_task(engine, name="a", run_at=T0 - 2 * MIN, queue="mail")
    expired = add_task(engine, name="a", status="running", attempts=1, lease_until=T0 - 5 * MIN)
    retrying = add_task(engine, name="c", status="retrying", attempts=2, run_at=T0)
    add_task(engine, name="a", run_at=T0 + SEC)  # future
    add_task(engine, name="a", status="running", attempts=1)  # lease still valid
    add_task(engine, name="c", status="retrying", attempts=1, run_at=T0 + MIN)
    for status in ("succeeded", "dead", "cancelled"):
        add_task(engine, name="a", status=status, run_at=T0 - 20 * MIN)

    rows = json.loads(at_t0(db_url, "due", "--json").stdout)
    assert [r["id"] for r in rows] == [high, low_old, expired, low_new, tie, retrying]
    assert rows[2]["status"] == "running"
    assert rows[-1]["status"] == "retrying" and rows[-1]["attempts"] == 2

    def ids(*args: str) -> list[int]:
        return [r["id"] for r in json.loads(at_t0(db_url, "due", "--json", *args).stdout)]

    assert ids("--queue", "mail") == [tie]
    assert ids("--task", "c") == [retrying]
    assert ids("--limit", "2") == [high, low_old]
    assert ids("--task", "a", "--queue", "default", "--limit", "1") == [low_old]

    # The library and the runner agree on what is due and in which order.
    batch = store.claim(
        engine,
        names=["a", "b", "c"],
        queues=[],
        limit=100,
        worker="w",
        leases={"a": 60, "b": 60, "c": 60},
        now=T0,
    )
    assert [t.id for t in batch.tasks] == [high, low_old, expired, low_new, tie, retrying]


def test_failures_lists_failed_attempts_in_the_window(db_url: str, engine: Engine) -> None:
    retrying = add_task(engine, name="sync", status="retrying", attempts=2, run_at=T0 + 4 * MIN)
    add_attempt(engine, retrying, 1, "failed", T0 - 3 * MIN, T0 - 3 * MIN + SEC, "E: one")
    add_attempt(engine, retrying, 2, "retry", T0 - MIN, T0 - MIN + SEC, "retry requested")
    dead = add_task(engine, name="mail", status="dead", attempts=3)
    add_attempt(engine, dead, 1, "lost", T0 - 2 * MIN, T0 - 90 * SEC, "lease expired")
    add_attempt(engine, dead, 2, "interrupted", T0 - 80 * SEC, T0 - 70 * SEC)
    add_attempt(engine, dead, 3, "timeout", T0 - 60 * SEC, T0 - 30 * SEC, "timeout after 30s")
    ok = add_task(engine, name="mail", status="succeeded", attempts=1)
    add_attempt(engine, ok, 1, "succeeded", T0 - MIN, T0 - 30 * SEC)
    old = add_task(engine, name="mail", status="dead", attempts=1)
    add_attempt(engine, old, 1, "failed", T0 - 3 * timedelta(days=1), T0 - timedelta(days=2))

    rows = json.loads(at_t0(db_url, "failures", "--json").stdout)
    assert [(r["id"], r["attempt"]) for r in rows] == [
        (dead, 3),
        (retrying, 2),
        (dead, 2),
        (dead, 1),
        (retrying, 1),
    ]
    by_key = {(r["id"], r["attempt"]): r for r in rows}
    first = by_key[(retrying, 1)]
    assert first["error"] == "E: one"
    assert first["status"] == "retrying"
    assert first["task"] == "sync"
    assert datetime.fromisoformat(first["failed_at"]) == T0 - 3 * MIN + SEC
    assert datetime.fromisoformat(first["next_run_at"]) == T0 + 4 * MIN
    assert by_key[(dead, 3)]["next_run_at"] is None

    def keys(*args: str) -> list[tuple[int, int]]:
        data = json.loads(at_t0(db_url, "failures", "--json", *args).stdout)
        return [(r["id"], r["attempt"]) for r in data]

    assert keys("--since", "65s") == [(dead, 3), (retrying, 2)]
    assert keys("--task", "sync") == [(retrying, 2), (retrying, 1)]
    assert len(keys("--since", "3d")) == 6
    assert keys("--limit", "1") == [(dead, 3)]


def test_dlq_lists_dead_tasks_newest_first(db_url: str, engine: Engine) -> None:
    older = add_task(
        engine, name="a", status="dead", attempts=5, finished_at=T0 - 2 * MIN, key="k1"
    )
    newer = add_task(
        engine, name="b", status="dead", attempts=1, finished_at=T0 - MIN, last_error="Fail: no"
    )
    add_task(engine, name="a", status="retrying", attempts=2)
    rows = json.loads(at_t0(db_url, "dlq", "--json").stdout)
    assert [r["id"] for r in rows] == [newer, older]
    assert rows[0]["last_error"] == "Fail: no"
    assert rows[1]["key"] == "k1" and rows[1]["attempts"] == 5
    assert datetime.fromisoformat(rows[1]["failed_at"]) == T0 - 2 * MIN
    only_a = json.loads(at_t0(db_url, "dlq", "--task", "a", "--json").stdout)
    assert [r["id"] for r in only_a] == [older]
    assert [r["id"] for r in json.loads(at_t0(db_url, "dlq", "--limit", "1", "--json").stdout)] == [
        newer
    ]


# -- tables --------------------------------------------------------------------------------


def known_state(engine: Engine) -> None:
    """Fixed ids, names and times, for comparing whole tables."""
    add_task(engine, id=101, name="send_welcome_email", key="welcome:42", priority=5)
    add_task(engine, id=102, name="sync", queue="crm", run_at=T0 - 5 * MIN)
    add_task(
        engine,
        id=103,
        name="sync",
        queue="crm",
        status="running",
        attempts=2,
        lease_until=T0 - 30 * SEC,
        run_at=T0 - 3 * MIN,
        started_at=T0 - 2 * MIN,
    )
    add_task(
        engine,
        id=104,
        name="send_welcome_email",
        status="retrying",
        attempts=1,
        run_at=T0 + 4 * MIN,
    )
    add_task(
        engine,
        id=105,
        name="sync",
        queue="crm",
        status="dead",
        attempts=5,
        finished_at=T0 - 10 * MIN,
        last_error="ConnectionError: the CRM answered 503 Service Unavailable for the "
        "fifth time in a row, giving up",
    )
    add_task(
        engine,
        id=106,
        name="send_welcome_email",
        status="succeeded",
        attempts=1,
        run_at=T0 - 30 * MIN,
        started_at=T0 - 29 * MIN,
        finished_at=T0 - 29 * MIN + 2 * SEC,
    )
    add_attempt(
        engine,
        104,
        1,
        "failed",
        T0 - 61 * SEC,
        T0 - MIN,
        "SMTPServerDisconnected: Connection unexpectedly closed while sending the message",
    )
    add_attempt(engine, 105, 5, "timeout", T0 - 11 * MIN, T0 - 10 * MIN, "timeout after 60s")
    add_attempt(engine, 106, 1, "succeeded", T0 - 29 * MIN, T0 - 29 * MIN + 2 * SEC)


EXPECTED_DUE = """\
 id  task                queue    prio  status   run_at            tries  key
---  ------------------  -------  ----  -------  ----------------  -----  ------
101  send_welcome_email  default     5  pending  2026-03-02 11:59  0/5    welco…
102  sync                crm         0  pending  2026-03-02 11:55  0/5
103  sync                crm         0  expired  2026-03-02 11:57  2/5
"""

EXPECTED_FAILURES = """\
 id  task                #  failed_at         status    next   error
---  ------------------  -  ----------------  --------  -----  -----------------
104  send_welcome_email  1  2026-03-02 11:59  retrying  in 4m  SMTPServerDiscon…
105  sync                5  2026-03-02 11:50  dead             timeout after 60s
"""

EXPECTED_DLQ = """\
 id  task  queue  tries  failed_at         error                             key
---  ----  -----  -----  ----------------  --------------------------------  ---
105  sync  crm        5  2026-03-02 11:50  ConnectionError: the CRM answer…
"""

EXPECTED_STATS = """\
task                pend  due  run  retry  ok  dead  canc  oldest  last ok
------------------  ----  ---  ---  -----  --  ----  ----  ------  ----------
send_welcome_email     1    1    0      1   1     0     0  1m      28m58s ago
sync                   1    2    1      0   0     1     0  5m

over the last 1d:
task                tries   fail%  run p50  run p95  wait p50  wait p95
------------------  -----  ------  -------  -------  --------  --------
send_welcome_email      2   50.0%    1.50s    1.95s        1m        1m
sync                    1  100.0%       1m       1m        1m        1m
"""


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("due", EXPECTED_DUE),
        ("failures", EXPECTED_FAILURES),
        ("dlq", EXPECTED_DLQ),
        ("stats", EXPECTED_STATS),
    ],
)
def test_tables_for_a_known_state(db_url: str, engine: Engine, command: str, expected: str) -> None:
    known_state(engine)
    result = at_t0(db_url, command, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.stdout == expected
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_tables_fit_80_columns_with_long_names_and_errors(db_url: str, engine: Engine) -> None:
    name = "a_really_long_task_name_for_the_nightly_reconciliation_of_every_ledger"
    for i in range(3):
        tid = add_task(
            engine,
            name=name,
            queue="q" * 60,
            status="dead",
            attempts=5,
            key=f"{'k' * 200}{i}",
            last_error="E" * 2000,
        )
        add_attempt(engine, tid, 5, "failed", T0 - MIN, T0 - MIN, "x " * 3000)
        add_task(engine, name=name, queue="q" * 60, key=f"{'d' * 200}{i}", priority=-100000)
    for command in ("due", "failures", "dlq", "stats"):
        result = at_t0(db_url, command, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
        assert "…" in result.stdout
        # Not a terminal and no COLUMNS (a pipe, a file, cron's mail): nothing is cut.
        whole = at_t0(db_url, command, env={"COLUMNS": None})
        assert "…" not in whole.stdout and name in whole.stdout, whole.stdout
    # JSON keeps the full text.
    full = json.loads(at_t0(db_url, "failures", "--json").stdout)
    assert full[0]["error"] == "x " * 3000


def test_tables_use_the_width_columns_gives(db_url: str, engine: Engine) -> None:
    """``COLUMNS=200`` still cut ``per_accou…`` to fit 80 columns."""
    name = "reconcile_ledger_per_account_nightly"
    add_task(engine, name=name, status="dead", attempts=5, last_error="E" * 300, key="k" * 30)
    add_task(engine, name=name, key="d" * 30, group_key="per_account=acct-1234567890")
    for command in ("due", "dlq", "stats"):
        wide = at_t0(db_url, command, env={"COLUMNS": "200"})
        assert name in wide.stdout, wide.stdout
        assert max(len(line) for line in wide.stdout.splitlines()) <= 200
        narrow = at_t0(db_url, command, env={"COLUMNS": "70"})  # as narrow as it can go
        assert "…" in narrow.stdout, narrow.stdout
        width = max(len(line) for line in narrow.stdout.splitlines())
        assert width < max(len(line) for line in wide.stdout.splitlines())
    due = at_t0(db_url, "due", env={"COLUMNS": "200"}).stdout
    assert "per_account=acct-1234567890" in due and "…" not in due, due
    dlq = at_t0(db_url, "dlq", env={"COLUMNS": "200"}).stdout
    assert "k" * 30 in dlq and "E" * 80 in dlq, dlq  # the error takes the room there is
    assert max(len(line) for line in dlq.splitlines()) == 200


def test_tables_fit_the_terminal_they_are_printed_on(
    db_url: str, engine: Engine, project: Path
) -> None:
    """On a terminal, without COLUMNS, its own width: here a pseudo-terminal 100 wide."""
    import fcntl
    import pty
    import struct
    import termios

    add_task(engine, name="t" * 150, status="dead", attempts=5, last_error="E" * 300)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = cli_env(db_url, {"COLUMNS": ""})
    with subprocess.Popen(
        [sys.executable, "-m", "tickrun", "dlq"], cwd=project, env=env, stdout=follower
    ) as proc:
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(60) == 0
    os.close(leader)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert max(len(line) for line in lines) == 100, lines
    assert "…" in lines[2]


def test_fitted_table_shrinks_the_widest_shrinkable_column_first() -> None:
    rows = [{"id": 1, "a": "x" * 50, "b": "y" * 50}]
    columns = [Column("id", align="right"), Column("a", shrink=10), Column("b", shrink=10)]
    text = fitted_table(rows, columns, width=40)
    lines = text.splitlines()
    assert max(len(line) for line in lines) == 40
    assert lines[2].count("…") == 2
    # Non-shrinkable columns never lose text.
    assert fitted_table(rows, [Column("a"), Column("b")], width=40).count("…") == 0


# -- show ----------------------------------------------------------------------------------


def test_show_json_has_every_field_payload_and_history(db_url: str, engine: Engine) -> None:
    tid = add_task(
        engine,
        name="sync",
        status="dead",
        attempts=2,
        max_attempts=2,
        payload='{"account": "acme", "ids": [1, 2]}',
        key="sync:acme",
        last_error="RuntimeError: second",
        last_traceback="Traceback (most recent call last):\n  ...\nRuntimeError: second",
    )
    add_attempt(engine, tid, 1, "failed", T0 - 5 * MIN, T0 - 5 * MIN + 3 * SEC, "E: first")
    add_attempt(
        engine,
        tid,
        2,
        "failed",
        T0 - 2 * MIN,
        T0 - 2 * MIN + SEC,
        "RuntimeError: second",
        traceback="Traceback (most recent call last):\n  File x\nRuntimeError: second",
        worker="other:2",
    )
    result = at_t0(db_url, "show", str(tid), "--json")
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["id"] == tid
    assert obj["task"] == "sync"
    assert obj["status"] == "dead"
    assert obj["key"] == "sync:acme"
    assert obj["payload"] == {"account": "acme", "ids": [1, 2]}
    for name in ("queue", "priority", "attempts", "max_attempts", "run_at", "created_at"):
        assert name in obj
    assert obj["last_traceback"].endswith("RuntimeError: second")
    assert [list(h) for h in obj["history"]] == [listings.HISTORY_FIELDS] * 2
    assert [h["attempt"] for h in obj["history"]] == [1, 2]
    assert obj["history"][1]["worker"] == "other:2"
    assert obj["history"][0]["error"] == "E: first"
    assert datetime.fromisoformat(obj["history"][0]["finished_at"]) == T0 - 5 * MIN + 3 * SEC

    table = at_t0(db_url, "show", str(tid)).stdout
    assert '"account": "acme"' in table
    assert "history:" in table
    assert "3.00s" in table  # the first attempt's duration
    # The last failure's traceback, in full.
    assert (
        "last failure (attempt 2, failed):\nTraceback (most recent call last):\n  File x\n" in table
    )

    parsed = list(
        csv.reader(io.StringIO(at_t0(db_url, "show", str(tid), "--format", "csv").stdout))
    )
    assert parsed[0][:2] == ["id", "task"]
    assert json.loads(parsed[1][parsed[0].index("payload")]) == obj["payload"]


def test_show_a_task_that_never_ran(db_url: str, engine: Engine) -> None:
    tid = add_task(engine, name="a", payload='{"n": 1}')
    obj = json.loads(at_t0(db_url, "show", str(tid), "--json").stdout)
    assert obj["history"] == [] and obj["payload"] == {"n": 1}
    assert "(no attempt yet)" in at_t0(db_url, "show", str(tid)).stdout


# -- runs ----------------------------------------------------------------------------------


def add_unfinished_run(engine: Engine, worker: str, started: datetime, **values: Any) -> int:
    """A run row as a run leaves it before it ends: no end, counts 0 (a worker: its beat's)."""
    row = {"host": "elsewhere", "pid": 1, "claimed": 0, "succeeded": 0, "retried": 0, "dead": 0}
    with engine.begin() as conn:
        return conn.execute(
            insert(runs).values(worker=worker, started_at=started, **{**row, **values})
        ).inserted_primary_key[0]


def test_runs_without_an_end_are_running_or_lost_with_the_claims_they_left(
    db_url: str, engine: Engine
) -> None:
    """A killed cron run showed ``claimed 0`` and no end, like one still going."""
    add_run(engine, T0 - 50 * MIN)
    beating = add_unfinished_run(
        engine, "w:1", T0 - 2 * 60 * MIN, heartbeat_at=T0 - 10 * SEC, claimed=7, succeeded=7
    )
    silent = add_unfinished_run(
        engine, "w:2", T0 - 2 * 60 * MIN, heartbeat_at=T0 - 5 * MIN, claimed=3, succeeded=3
    )
    killed = add_unfinished_run(engine, "cron-1", T0 - 20 * MIN)
    going = add_unfinished_run(engine, "cron-1", T0 - 10 * MIN)  # the same --worker name
    for i, outcome in enumerate(("succeeded", "succeeded", "failed")):
        done = add_task(engine, status="succeeded", finished_at=T0 - 15 * MIN)
        start = T0 - (19 - i) * MIN
        add_attempt(engine, done, 1, outcome, start, start + SEC, worker="cron-1")
    add_task(  # held by the killed run, its lease expired
        engine, status="running", attempts=1, worker="cron-1", started_at=T0 - 16 * MIN,
        lease_until=T0 - 14 * MIN, claimable_at=T0 - 14 * MIN,
    )  # fmt: skip
    # The later run's: one attempt done, one task held with a live lease.
    later = add_task(engine, status="succeeded", finished_at=T0 - 5 * MIN)
    add_attempt(engine, later, 1, "succeeded", T0 - 6 * MIN, T0 - 5 * MIN, worker="cron-1")
    add_task(
        engine, status="running", attempts=1, worker="cron-1", started_at=T0 - MIN,
        lease_until=T0 + MIN, claimable_at=T0 + MIN,
    )  # fmt: skip
    with freeze_time(T0):
        rows = {r["id"]: r for r in activity.recent_runs(engine, T0)}
    assert len(rows) == 5
    assert [r["state"] for r in rows.values() if r["finished_at"]] == ["finished"]

    def counts(run_id: int) -> tuple[Any, ...]:
        r = rows[run_id]
        return (r["state"], r["claimed"], r["succeeded"], r["retried"], r["dead"])

    assert counts(beating) == ("running", 7, 7, 0, 0)  # a worker: its heartbeat's counts
    assert counts(silent) == ("lost", 3, 3, 0, 0)  # no heartbeat for 5 minutes
    assert counts(killed) == ("lost", 4, 2, None, None)  # 3 attempts and 1 expired lease
    assert counts(going) == ("running", 2, 1, None, None)
    table = at_t0(db_url, "runs", env={"COLUMNS": "200"})
    line = next(ln for ln in table.stdout.splitlines() if ln.split()[0] == str(killed))
    assert " lost " in line and " cron-1 " in line, table.stdout


def test_show_a_lost_attempt_took_an_unknown_time(db_url: str, engine: Engine) -> None:
    """Its end is when a later claim noticed the expired lease, not when its run died."""
    task_id = add_task(engine, status="succeeded", attempts=2, finished_at=T0 - MIN)
    add_attempt(engine, task_id, 1, "lost", T0 - 40 * MIN, T0 - 3 * MIN, worker="cron-1")
    add_attempt(engine, task_id, 2, "succeeded", T0 - 3 * MIN, T0 - 3 * MIN + 2 * SEC)
    history = listings.show(engine, task_id).history
    assert [(h["outcome"], h["duration_s"]) for h in history] == [("lost", None), ("succeeded", 2)]
    table = at_t0(db_url, "show", str(task_id), env={"COLUMNS": "200"}).stdout
    lost = next(ln for ln in table.splitlines() if ln.strip().startswith("1 ") and "lost" in ln)
    assert "unknown" in lost and "37m" not in lost, table


# -- stats ---------------------------------------------------------------------------------


def stats_state(engine: Engine) -> datetime:
    """Run times in the window 1, 2, 3, 4, 10 s; waits 0, 5, 20, 60 s; 3 of 6 attempts fail."""
    s1 = add_task(
        engine, name="a", status="succeeded", attempts=1, run_at=T0 - 60 * MIN,
        started_at=T0 - 60 * MIN, finished_at=T0 - 60 * MIN + SEC,
    )  # fmt: skip
    add_attempt(engine, s1, 1, "succeeded", T0 - 60 * MIN, T0 - 60 * MIN + SEC)
    s2 = add_task(
        engine, name="a", status="succeeded", attempts=1, run_at=T0 - 50 * MIN,
        started_at=T0 - 50 * MIN + 5 * SEC, finished_at=T0 - 50 * MIN + 7 * SEC,
    )  # fmt: skip
    add_attempt(engine, s2, 1, "succeeded", T0 - 50 * MIN + 5 * SEC, T0 - 50 * MIN + 7 * SEC)
    # Retried: its run_at is the retry time, the due time of its second attempt.
    last_ok = T0 - 40 * MIN + 23 * SEC
    s3 = add_task(
        engine, name="a", status="succeeded", attempts=2, run_at=T0 - 40 * MIN,
        started_at=T0 - 40 * MIN + 20 * SEC, finished_at=last_ok,
    )  # fmt: skip
    add_attempt(engine, s3, 1, "failed", T0 - 45 * MIN, T0 - 45 * MIN + 4 * SEC)
    add_attempt(engine, s3, 2, "succeeded", T0 - 40 * MIN + 20 * SEC, last_ok)
    r1 = add_task(
        engine, name="a", status="running", attempts=3, run_at=T0 - 10 * MIN,
        started_at=T0 - 9 * MIN, lease_until=T0 + MIN,
    )  # fmt: skip
    add_attempt(engine, r1, 1, "retry", T0 - 20 * MIN, T0 - 20 * MIN + 10 * SEC)
    add_attempt(engine, r1, 2, "lost", T0 - 15 * MIN, T0 - 10 * MIN)
    old = add_task(
        engine, name="a", status="succeeded", attempts=1, run_at=T0 - timedelta(days=3),
        started_at=T0 - timedelta(days=3), finished_at=T0 - timedelta(days=3) + 100 * SEC,
    )  # fmt: skip
    add_attempt(
        engine, old, 1, "succeeded", T0 - timedelta(days=3), T0 - timedelta(days=3) + 100 * SEC
    )
    add_task(engine, name="a", run_at=T0 - 90 * SEC)  # due for 90 s
    add_task(engine, name="a", run_at=T0 + 60 * MIN)  # waiting for the future: not due
    add_task(engine, name="a", status="retrying", attempts=1, run_at=T0 + 5 * MIN)  # backoff
    add_task(engine, name="a", status="dead", attempts=5)
    add_task(engine, name="a", status="cancelled")
    add_task(engine, name="b", run_at=T0 + MIN)
    return last_ok


def test_stats_counts_percentiles_and_failure_rate_on_frozen_time(
    db_url: str, engine: Engine
) -> None:
    last_ok = stats_state(engine)
    result = at_t0(db_url, "stats", "--json")
    assert result.exit_code == 0, result.output
    a, b = json.loads(result.stdout)
    assert a["task"] == "a" and b["task"] == "b"
    counts = {k: a[k] for k in ("pending", "due", "running", "retrying", "succeeded", "dead")}
    assert counts == {
        "pending": 2,
        "due": 1,
        "running": 1,
        "retrying": 1,
        "succeeded": 4,
        "dead": 1,
    }
    assert a["cancelled"] == 1
    assert a["oldest_due_age_s"] == 90.0
    assert datetime.fromisoformat(a["last_success_at"]) == last_ok
    # Hand-computed: run times [1, 2, 3, 4, 10] -> median 3, p95 at rank 3.8: 4 + 0.8 * 6.
    assert a["run_p50_s"] == 3.0
    assert a["run_p95_s"] == 8.8
    # Waits [0, 5, 20, 60] -> median 12.5, p95 at rank 2.85: 20 + 0.85 * 40.
    assert a["wait_p50_s"] == 12.5
    assert a["wait_p95_s"] == 54.0
    assert a["window_attempts"] == 6
    assert a["failure_rate"] == 0.5  # failed, retry, lost
    assert b["pending"] == 1 and b["due"] == 0 and b["oldest_due_age_s"] is None
    assert b["window_attempts"] == 0
    assert b["failure_rate"] is None and b["run_p50_s"] is None and b["wait_p95_s"] is None

    # A wider window takes in the old attempt: 100 s run, 0 s wait.
    (a,) = [r for r in json.loads(at_t0(db_url, "stats", "--since", "4d", "--json").stdout)
            if r["task"] == "a"]  # fmt: skip
    assert a["window_attempts"] == 7
    assert a["run_p50_s"] == 3.5
    assert a["wait_p50_s"] == 5.0
    assert a["failure_rate"] == round(3 / 7, 4)


def test_percentile_matches_the_inclusive_quantile_definition() -> None:
    values = [7.0, 1.0, 3.5, 12.0, 2.25, 9.0, 30.0]
    assert listings.percentile(values, 0.5) == statistics.median(values)
    quartiles = statistics.quantiles(values, n=20, method="inclusive")
    assert listings.percentile(values, 0.95) == pytest.approx(quartiles[18])
    assert listings.percentile([], 0.5) is None
    assert listings.percentile([4.0], 0.95) == 4.0


# -- dlq retry / purge -----------------------------------------------------------------------


def dead_task(engine: Engine, name: str = "a", **fields: Any) -> int:
    tid = add_task(
        engine,
        name=name,
        status="dead",
        attempts=3,
        max_attempts=3,
        last_error="E: boom",
        **fields,
    )
    for n in (1, 2, 3):
        add_attempt(engine, tid, n, "failed", T0 - 20 * MIN + n * MIN, T0 - 20 * MIN + n * MIN)
    return tid


def assert_retried(engine: Engine, tid: int) -> None:
    row = task_row(engine, tid)
    assert row.status == "pending"
    assert row.attempts == 0
    assert row.run_at == T0 and row.claimable_at == T0
    assert row.finished_at is None and row.claim_token is None
    assert n_attempts(engine, tid) == 3  # history kept


def test_dlq_retry_by_id(db_url: str, engine: Engine) -> None:
    one, two, other = dead_task(engine), dead_task(engine), dead_task(engine)
    pending = add_task(engine, name="a")
    result = at_t0(db_url, "dlq", "retry", str(one), str(two), str(pending))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"retried 2 dead tasks back to pending, due now: {one}, {two}"
    assert result.stderr.strip() == f"note: task {pending} is pending, not dead: left alone"
    assert_retried(engine, one)
    assert_retried(engine, two)
    assert task_row(engine, other).status == "dead"
    # Due now, in the order a run claims.
    due = json.loads(at_t0(db_url, "due", "--json").stdout)
    assert {r["id"] for r in due} == {one, two, pending}


def test_dlq_retry_all_and_by_task(db_url: str, engine: Engine) -> None:
    a1, a2, b1 = dead_task(engine, "a"), dead_task(engine, "a"), dead_task(engine, "b")
    result = at_t0(db_url, "dlq", "retry", "--all", "--task", "a")
    assert result.exit_code == 0, result.output
    assert_retried(engine, a1)
    assert_retried(engine, a2)
    assert task_row(engine, b1).status == "dead"
    result = at_t0(db_url, "dlq", "retry", "--all")
    assert result.stdout.strip() == f"retried 1 dead task back to pending, due now: {b1}"
    assert_retried(engine, b1)
    assert at_t0(db_url, "dlq", "retry", "--all").stdout.strip() == "retried 0 dead tasks"


@pytest.mark.parametrize(
    "args", [["--dry-run", "{one}"], ["--all", "--dry-run"], ["--all", "--task", "a", "--dry-run"]]
)
def test_dlq_retry_dry_run_changes_nothing(db_url: str, engine: Engine, args: list[str]) -> None:
    one = dead_task(engine, "a")
    dead_task(engine, "b")
    before = snapshot(engine)
    result = at_t0(db_url, "dlq", "retry", *[a.format(one=one) for a in args])
    assert result.exit_code == 0, result.output
    assert "dry run: would retry" in result.stdout
    assert str(one) in result.stdout and "E: boom" in result.stdout
    assert snapshot(engine) == before


def test_concurrent_retries_of_one_task_move_it_once(db_url: str, engine: Engine) -> None:
    tid = dead_task(engine)
    barrier = threading.Barrier(6)
    moved: list[list[int]] = []

    def retry() -> None:
        barrier.wait()
        moved.append(maintenance.retry_dead(engine, T0, ids=[tid]).ids)

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(moved) == [[]] * 5 + [[tid]]
    assert_retried(engine, tid)


def test_a_late_retry_never_resets_a_task_already_claimed_again(
    db_url: str, engine: Engine
) -> None:
    tid = dead_task(engine)
    assert maintenance.retry_dead(engine, T0, ids=[tid]).ids == [tid]
    batch = store.claim(
        engine, names=["a"], queues=[], limit=10, worker="w", leases={"a": 60}, now=T0
    )
    assert [t.id for t in batch.tasks] == [tid]
    late = maintenance.retry_dead(engine, T0, ids=[tid])
    assert late.ids == [] and late.skipped == {tid: "running"}
    row = task_row(engine, tid)
    assert row.status == "running" and row.attempts == 1
    assert maintenance.retry_dead(engine, T0, task="a").ids == []


@pytest.mark.slow
def test_two_real_processes_retrying_one_task(db_url: str, engine: Engine, project: Path) -> None:
    tid = dead_task(engine)
    results = tickruns(2, "dlq", "retry", str(tid), cwd=project, db=db_url)
    assert [code for code, _, _ in results] == [0, 0], results
    outs = [(out, err) for _, out, err in results]
    stdouts = sorted(out for out, _ in outs)
    assert stdouts == [
        "retried 0 dead tasks\n",
        f"retried 1 dead task back to pending, due now: {tid}\n",
    ]
    row = task_row(engine, tid)
    assert row.status == "pending" and row.attempts == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 1


def test_dlq_purge(db_url: str, engine: Engine) -> None:
    old_a = dead_task(engine, "a", finished_at=T0 - timedelta(days=40))
    new_a = dead_task(engine, "a", finished_at=T0 - timedelta(days=1))
    old_b = dead_task(engine, "b", finished_at=T0 - timedelta(days=40))
    keep = [
        add_task(engine, name="a", status=s, finished_at=T0 - timedelta(days=60))
        for s in ("succeeded", "cancelled")
    ] + [add_task(engine, name="a", status=s) for s in ("pending", "running", "retrying")]

    before = snapshot(engine)
    dry = at_t0(db_url, "dlq", "purge", "--older-than", "30d", "--task", "a", "--dry-run")
    assert dry.exit_code == 0 and "dry run: would purge 1 dead task;" in dry.stdout
    assert snapshot(engine) == before

    result = at_t0(db_url, "dlq", "purge", "--older-than", "30d", "--task", "a")
    assert result.stdout.strip() == f"purged 1 dead task and their history: {old_a}"
    assert n_attempts(engine, old_a) == 0
    result = at_t0(db_url, "dlq", "purge", "--older-than", "30d")
    assert result.stdout.strip().endswith(f": {old_b}")
    assert [r["id"] for r in json.loads(at_t0(db_url, "dlq", "--json").stdout)] == [new_a]
    assert n_attempts(engine, new_a) == 3
    at_t0(db_url, "dlq", "purge")
    assert json.loads(at_t0(db_url, "dlq", "--json").stdout) == []
    with engine.connect() as conn:
        left = set(conn.execute(select(tasks.c.id)).scalars())
    assert left == set(keep)


# -- cancel / prune --------------------------------------------------------------------------


def test_cancel_only_waiting_tasks(db_url: str, engine: Engine) -> None:
    pending = add_task(engine, name="a")
    retrying = add_task(engine, name="a", status="retrying", attempts=1)
    others = {s: add_task(engine, name="a", status=s) for s in ("running", "succeeded", "dead")}
    result = at_t0(db_url, "cancel", str(pending), str(retrying), *map(str, others.values()))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"cancelled 2 tasks: {pending}, {retrying}"
    for status, tid in others.items():
        assert f"note: task {tid} is {status}: only pending or retrying" in result.stderr
        assert task_row(engine, tid).status == status
    for tid in (pending, retrying):
        row = task_row(engine, tid)
        assert row.status == "cancelled" and row.finished_at == T0 and row.claimable_at is None
    assert json.loads(at_t0(db_url, "due", "--json").stdout) == []


def test_cancel_with_an_unknown_id_changes_nothing(db_url: str, engine: Engine) -> None:
    pending = add_task(engine, name="a")
    before = snapshot(engine)
    result = at_t0(db_url, "cancel", str(pending), str(pending + 1000))
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: no task with id {pending + 1000}; nothing changed"
    assert snapshot(engine) == before


def test_prune_deletes_only_old_finished_tasks_and_their_history(
    db_url: str, engine: Engine
) -> None:
    old = T0 - timedelta(days=10)
    doomed = [
        add_task(engine, name="a", status="succeeded", finished_at=old),
        add_task(engine, name="a", status="cancelled", finished_at=old),
    ]
    kept = [
        add_task(engine, name="a", status="succeeded", finished_at=T0 - timedelta(days=6)),
        add_task(engine, name="a", status="cancelled", finished_at=T0 - MIN),
        # Never finished rows, however old.
        add_task(engine, name="a", run_at=old, created_at=old),
        add_task(engine, name="a", status="running", run_at=old, created_at=old),
        add_task(engine, name="a", status="retrying", attempts=2, run_at=old, created_at=old),
        add_task(engine, name="a", status="dead", finished_at=old, created_at=old),
    ]
    for tid in doomed + kept:
        add_attempt(engine, tid, 1, "failed", old, old)
    kept_rows = [r for r in snapshot(engine)[0] if r[0] in kept]

    before = snapshot(engine)
    dry = at_t0(db_url, "prune", "--older-than", "7d", "--dry-run")
    assert dry.stdout.strip() == (
        "dry run: would prune 2 finished tasks (finished before 2026-02-23 12:00:00 UTC)"
    )
    assert snapshot(engine) == before

    result = at_t0(db_url, "prune", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "pruned 2 finished tasks (finished before 2026-02-23 12:00:00 UTC)"
    )
    task_rows, attempt_rows = snapshot(engine)
    assert task_rows == kept_rows
    assert sorted(r[1] for r in attempt_rows) == sorted(kept)
    assert at_t0(db_url, "prune", "--older-than", "7d").stdout.startswith("pruned 0 finished")


def test_prune_in_batches(db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "CHUNK", 3)
    ids = [add_task(engine, name="a", status="succeeded") for _ in range(8)]
    add_attempt(engine, ids[0], 1, "succeeded", T0 - MIN, T0 - MIN)
    keep = add_task(engine, name="a")
    assert maintenance.prune(engine, T0, older_than=0) == 8
    assert [r[0] for r in snapshot(engine)[0]] == [keep]


# -- check ---------------------------------------------------------------------------------


def test_check_passes_below_every_threshold(db_url: str, engine: Engine) -> None:
    dead_task(engine)
    add_task(engine, name="a", run_at=T0 - 5 * MIN)
    add_run(engine, T0 - 2 * MIN)
    result = at_t0(db_url, "check", "--max-dead", "1", "--max-due-age", "5m", "--max-silence", "2m")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("OK: 1 dead task, oldest due task 5m old, last run 2m ago")
    default = at_t0(db_url, "check")  # any dead task is a problem unless allowed
    assert default.exit_code == 1
    assert default.stdout.startswith("dead: 1 task in the dead-letter queue (--max-dead 0)")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--max-dead", "0"], "dead: 1 task in the dead-letter queue (--max-dead 0)"),
        (["--max-dead", "1", "--max-due-age", "4m59s"], "due: task {due} (a) has been due for 5m"),
        (["--max-dead", "1", "--max-silence", "119"], "silence: no run started in the last 1m59s"),
    ],
)
def test_check_reports_each_threshold_crossed(
    db_url: str, engine: Engine, args: list[str], problem: str
) -> None:
    dead_task(engine)
    due = add_task(engine, name="a", run_at=T0 - 5 * MIN)
    add_run(engine, T0 - 2 * MIN)
    result = at_t0(db_url, "check", *args)
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(problem.format(due=due)), lines


def test_check_one_line_per_problem(db_url: str, engine: Engine) -> None:
    dead_task(engine)
    add_task(engine, name="a", status="running", lease_until=T0 - 20 * MIN)
    result = at_t0(
        db_url, "check", "--max-dead", "0", "--max-due-age", "10m", "--max-silence", "1h"
    )
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["dead", "due", "silence"]
    assert lines[2] == "silence: no run has ever been recorded"


def test_check_reports_due_tasks_no_handler_claims(
    db_url: str, engine: Engine, project: Path
) -> None:
    app = write_app(
        project,
        """
        from tickrun import App
        app = App()

        @app.task
        def known() -> None: ...
        """,
    )
    add_task(engine, name="known")
    add_task(engine, name="renamed_long_ago")
    add_task(engine, name="renamed_long_ago")
    add_task(engine, name="gone", run_at=T0 + timedelta(days=365 * 30))  # not due yet
    result = tickrun("check", cwd=project, db=db_url, env={"TICKRUN_APP": app})
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        "unclaimed: 2 due tasks named 'renamed_long_ago' that no handler of jobs:app claims"
    )
    # Without an application there is nothing to compare with.
    assert tickrun("check", cwd=project, db=db_url).returncode == 0


# -- bad input -----------------------------------------------------------------------------


BAD_INPUT = [
    (["due", "--format", "xml"], "--format"),
    (["due", "--limit", "0"], "--limit"),
    (["due", "--limit", "many"], "--limit"),
    (["failures", "--since", "yesterday"], "invalid duration"),
    (["failures", "--since", "-5m"], "invalid duration"),
    (["failures", "--format", "yaml"], "--format"),
    (["dlq", "--format", "xml"], "--format"),
    (["dlq", "retry"], "or --all"),
    (["dlq", "retry", "{dead}", "--all"], "not both"),
    (["dlq", "retry", "--task", "a"], "--task goes with --all"),
    (["dlq", "retry", "{dead}", "{unknown}"], "no task with id {unknown}"),
    (["dlq", "retry", "abc"], "not a valid integer"),
    (["dlq", "--task", "a", "purge"], "put --task after the subcommand"),
    (["dlq", "purge", "--older-than", "soon"], "invalid duration"),
    (["dlq", "frobnicate"], "No such command"),
    (["show", "{unknown}"], "no task with id {unknown}"),
    (["show", "abc"], "not a valid integer"),
    (["show"], "Missing argument"),
    (["show", "{dead}", "--format", "xml"], "--format"),
    (["stats", "--since", "1y"], "invalid duration"),
    (["stats", "--format", "html"], "--format"),
    (["cancel"], "Missing argument"),
    (["cancel", "{pending}", "{unknown}"], "no task with id {unknown}"),
    (["cancel", "x"], "not a valid integer"),
    (["prune"], "--older-than"),
    (["prune", "--older-than", "a while"], "invalid duration"),
    (["check", "--max-dead", "-1"], "--max-dead"),
    (["check", "--max-due-age", "10 minutes"], "invalid duration"),
    (["check", "--max-silence", "nan"], "invalid duration"),
    (["doctor", "--json"], "No such option"),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_error_line_exit_2_and_changes_nothing(
    db_url: str, engine: Engine, args: list[str], message: str
) -> None:
    ids = {"dead": dead_task(engine), "pending": add_task(engine, name="a")}
    ids["unknown"] = max(ids.values()) + 1000
    before = snapshot(engine)
    result = at_t0(db_url, *[a.format(**ids) for a in args])
    assert result.exit_code == 2, result.output
    assert message.format(**ids) in one_error_line(result)
    assert result.stdout == ""
    assert snapshot(engine) == before


# -- before `tickrun init`, and doctor -------------------------------------------------------


@pytest.mark.parametrize("args", COMMANDS_NEEDING_SCHEMA, ids=" ".join)
def test_commands_before_init_exit_2(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "missing.db"
    result = invoke(f"sqlite:///{missing}", *args)
    assert result.exit_code == 2
    assert "tickrun init" in one_error_line(result)
    assert not missing.exists()  # no empty file left behind

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = invoke(f"sqlite:///{empty}", *args)
    assert result.exit_code == 2
    assert "run `tickrun init`" in one_error_line(result)


def test_doctor_before_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(None, "doctor")
    assert result.exit_code == 0, result.output
    assert "database:     sqlite:///tickrun.db (from default)" in result.stdout
    assert "missing: tickrun.db does not exist; run `tickrun init`" in result.stdout
    assert not (tmp_path / "tickrun.db").exists()

    sqlite3.connect(tmp_path / "tickrun.db").close()
    result = invoke(None, "doctor")
    assert result.exit_code == 0, result.output
    assert "schema:       missing: run `tickrun init`" in result.stdout
    assert "journal mode: wal" in result.stdout
    assert "busy timeout: 30000 ms" in result.stdout


def test_doctor_reports_what_this_invocation_resolves(db_url: str, backend: str) -> None:
    result = invoke(db_url, "doctor")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(from flag)" in out
    assert f"schema:       version {SCHEMA_VERSION} (current)" in out
    assert "python:" in out and "sqlalchemy:" in out and "tickrun:" in out
    product = {"sqlite": ("SQLite",), "postgresql": ("PostgreSQL",), "mysql": ("MariaDB", "MySQL")}
    assert any(f"server:       {p} " in out for p in product[backend])
    assert ("journal mode" in out) == (backend == "sqlite")
    env = invoke(None, "doctor", env={"TICKRUN_DATABASE_URL": db_url})
    assert "(from environment variable TICKRUN_DATABASE_URL)" in env.stdout


def test_doctor_sources_app_and_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_app(
        tmp_path,
        """
        from tickrun import App
        app = App(database_url="sqlite:///from_app.db")

        @app.task(queue="mail", max_attempts=3)
        def doctor_probe_task(n: int) -> None: ...
        """,
        module="doctor_probe_jobs",
    )
    (tmp_path / "pyproject.toml").write_text('[tool.tickrun]\napp = "doctor_probe_jobs:app"\n')
    try:
        result = invoke(None, "doctor")
    finally:
        sys.modules.pop("doctor_probe_jobs", None)
    assert result.exit_code == 0, result.output
    assert "application:  doctor_probe_jobs:app (from pyproject.toml)" in result.stdout
    assert "doctor_probe_task: queue mail, priority 0, max_attempts 3" in result.stdout
    assert "database:     sqlite:///from_app.db (from application)" in result.stdout


def test_doctor_masks_the_password_and_reports_an_unreachable_server(tmp_path: Path) -> None:
    url = "postgresql+psycopg://tick:s3cr3t-pw@127.0.0.1:1/nowhere"
    result = tickrun("doctor", cwd=tmp_path, db=url)
    assert result.returncode == 3, result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "postgresql+psycopg://tick:***@127.0.0.1:1/nowhere (from environment" in result.stdout
    assert result.stderr.startswith("error: database error")
    assert len(result.stderr.strip().splitlines()) == 1


def test_doctor_does_not_touch_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    before = path.read_bytes()
    result = invoke(f"sqlite:///{path}", "doctor")
    assert result.exit_code == 3, result.output
    assert path.read_bytes() == before


MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,vers=4.2 0 0
//nas/jobs /mnt/with\\040space cifs rw 0 0
user@host:/data /home/me/remote fuse.sshfs rw 0 0
tmpfs /mnt/shared/local tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "fs", "network"),
    [
        ("/home/me/tickrun.db", "ext4", False),
        ("/mnt/shared/app/tickrun.db", "nfs4", True),
        ("/mnt/shared/local/tickrun.db", "tmpfs", False),
        ("/mnt/sharedx/tickrun.db", "ext4", False),
        ("/mnt/with space/tickrun.db", "cifs", True),
        ("/home/me/remote/tickrun.db", "fuse.sshfs", True),
    ],
)
def test_network_file_systems_are_recognised(path: str, fs: str, network: bool) -> None:
    assert doctor.filesystem_type(path, MOUNTS) == fs
    assert doctor.is_network_fs(fs) is network


def test_doctor_warns_about_a_network_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tickrun.db"
    sqlite3.connect(path).close()
    monkeypatch.setattr(doctor, "filesystem_type", lambda p, mounts=None: "nfs4")
    result = invoke(f"sqlite:///{path}", "doctor")
    assert result.exit_code == 0, result.output
    assert "file system:  nfs4" in result.stdout
    assert "warning: " in result.stdout and "network file system (nfs4)" in result.stdout


def test_doctor_lists_live_workers_by_their_heartbeat(db_url: str, engine: Engine) -> None:
    with freeze_time("2026-12-03 09:00:00"):
        now = datetime.now(UTC)
        gone = store.start_run(engine, host="h", worker="h:1", pid=1, now=now)
        store.heartbeat(engine, gone, now=now - timedelta(minutes=5))
        alive = store.start_run(engine, host="h", worker="h:2", pid=2, now=now)
        store.heartbeat(engine, alive, now=now, claimed=7)
        store.start_run(engine, host="h", worker="h:3", pid=3, now=now)  # a cron run, no beat
        result = invoke(db_url, "doctor")
    assert result.exit_code == 0, result.output
    assert "workers:      1 live: h:2 (up 0.00s, beat 0.00s ago, 7 claimed)" in result.stdout


def test_doctor_says_when_no_worker_is_live(db_url: str) -> None:
    result = invoke(db_url, "doctor")
    assert result.exit_code == 0, result.output
    assert "workers:      none live" in result.stdout
