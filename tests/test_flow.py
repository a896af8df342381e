"""Flow control in the claim, in-process on every database, with explicit instants: rate
limits (a sliding window), task and queue concurrency, per-key concurrency and ordered groups.

The real-process tests (overlapping runs, SIGKILL) are in test_flow_processes.py.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tests.conftest import tickrun, write_app
from tests.helpers.apps import T0, new_app, row
from tests.helpers.locks import sessions_waiting
from tests.helpers.processes import wait_until
from tickrun import App, ConfigError, PayloadError, UsageError, clock, gate, store
from tickrun.flow import Rate, parse_rate
from tickrun.lifecycle import CANCELLED, DEAD, PENDING, RETRYING, RUNNING, SUCCEEDED, Outcome
from tickrun.schema import attempts, tasks


def claim(app: App, at: datetime, limit: int = 100, cap: int | None = None) -> store.ClaimBatch:
    return store.claim(
        app.engine,
        names=list(app.tasks),
        queues=[],
        limit=limit,
        worker="w",
        leases={n: s.lease for n, s in app.tasks.items()},
        now=at,
        limits=app.limits(),
        flow_cap=cap,
    )


def ids(batch: store.ClaimBatch) -> list[int]:
    return [c.id for c in batch.tasks]


def finish(app: App, batch: store.ClaimBatch, at: datetime, status: str = SUCCEEDED) -> None:
    outcome = Outcome.SUCCEEDED if status == SUCCEEDED else Outcome.FAILED
    ended = [
        store.Ended(c, outcome, status, at, at if status == RETRYING else None, "boom")  # type: ignore[arg-type]
        for c in batch.tasks
    ]
    assert store.record(app.engine, ended, now=at, worker="w") == {c.id for c in batch.tasks}


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def keyed_app(db_url: str, **options: Any) -> App:
    app = new_app(db_url)

    @app.task(concurrency_key="account", **options)
    def charge(account: Any, n: int = 0) -> None:
        pass

    @app.task
    def other(n: int = 0) -> None:
        pass

    return app


# -- per-key concurrency -----------------------------------------------------------------------


def test_per_key_concurrency_holds_back_tasks_without_using_an_attempt(db_url: str) -> None:
    app = keyed_app(db_url, concurrency=2)
    a = [app.enqueue("charge", {"account": 7, "n": n}, run_at=T0) for n in range(5)]
    b = app.enqueue("charge", {"account": "x", "n": 0}, run_at=T0)
    assert row(app.engine, a[0]).group_key == "account=7"

    first = claim(app, s(1))
    assert ids(first) == [a[0], a[1], b]  # two of account 7, one of account x
    assert ids(claim(app, s(2))) == []  # account 7 is busy
    for held in a[2:]:
        task = row(app.engine, held)
        assert (task.status, task.attempts, task.run_at) == (PENDING, 0, T0)

    finish(app, store.ClaimBatch([first.tasks[0]], 0, 0), s(3))
    assert ids(claim(app, s(4))) == [a[2]]  # the freed slot goes to the next in line


def test_enqueue_group_overrides_the_payload_field_and_groups_are_shared(db_url: str) -> None:
    app = keyed_app(db_url, concurrency=1)

    @app.task(concurrency_key="account", concurrency=1)
    def refund(account: Any) -> None:
        pass

    one = app.enqueue("charge", {"account": 1}, run_at=T0, group="acct:1")
    two = app.enqueue("refund", {"account": 2}, run_at=T0, group="acct:1")
    three = app.enqueue("refund", {"account": 3}, run_at=T0)
    assert row(app.engine, one).group_key == "acct:1"
    assert ids(claim(app, s(1))) == [one, three]  # `two` shares acct:1 with `one`
    assert row(app.engine, two).status == PENDING


def test_a_held_slot_frees_when_its_lease_expires(db_url: str) -> None:
    app = keyed_app(db_url, concurrency=1, lease=60)
    first = app.enqueue("charge", {"account": 1}, run_at=T0)
    second = app.enqueue("charge", {"account": 1}, run_at=T0)
    assert ids(claim(app, s(0))) == [first]  # then its run dies
    assert ids(claim(app, s(59))) == []
    # After the lease, the slot is free: the older due task takes it, the lost one waits.
    assert ids(claim(app, s(61))) == [second]
    assert row(app.engine, first).status == RUNNING
    with app.engine.connect() as conn:  # its lost attempt is recorded once it is claimed again
        assert conn.execute(select(func.count()).select_from(attempts)).scalar_one() == 0


# -- ordered groups ----------------------------------------------------------------------------


def test_an_ordered_group_starts_one_task_at_a_time_in_enqueue_order(db_url: str) -> None:
    app = keyed_app(db_url, ordered=True)
    a = [app.enqueue("charge", {"account": 1, "n": n}, run_at=T0) for n in range(3)]
    b = app.enqueue("charge", {"account": 2}, run_at=T0)
    free = app.enqueue("other", {}, run_at=T0)

    first = claim(app, s(1))
    assert ids(first) == [a[0], b, free]
    assert ids(claim(app, s(2))) == []
    # A retrying predecessor holds the group: its retry comes before the next task.
    finish(app, store.ClaimBatch([first.tasks[0]], 0, 0), s(3), RETRYING)
    assert row(app.engine, a[0]).status == RETRYING
    retry = claim(app, s(4))
    assert ids(retry) == [a[0]]
    finish(app, retry, s(5))
    assert ids(claim(app, s(6))) == [a[1]]


def test_a_later_task_waits_for_a_delayed_earlier_one(db_url: str) -> None:
    app = keyed_app(db_url, ordered=True)
    late = app.enqueue("charge", {"account": 1}, run_at=s(100))
    now = app.enqueue("charge", {"account": 1}, run_at=T0)
    assert ids(claim(app, s(1))) == []
    assert ids(claim(app, s(100))) == [late]
    assert row(app.engine, now).status == PENDING


@pytest.mark.parametrize("on_dead", ["block", "release"])
def test_a_dead_task_blocks_or_releases_its_ordered_group(db_url: str, on_dead: str) -> None:
    app = keyed_app(db_url, ordered=True, on_dead=on_dead)
    first = app.enqueue("charge", {"account": 1}, run_at=T0)
    second = app.enqueue("charge", {"account": 1}, run_at=T0)
    batch = claim(app, s(1))
    finish(app, batch, s(2), DEAD)
    if on_dead == "release":
        assert ids(claim(app, s(3))) == [second]
        return
    assert ids(claim(app, s(3))) == []
    from tickrun import maintenance

    maintenance.retry_dead(app.engine, s(4), ids=[first])
    assert ids(claim(app, s(5))) == [first]


def test_cancelling_or_purging_a_predecessor_releases_the_group(db_url: str) -> None:
    from tickrun import maintenance

    app = keyed_app(db_url, ordered=True)
    first = app.enqueue("charge", {"account": 1}, run_at=s(100))
    second = app.enqueue("charge", {"account": 1}, run_at=T0)
    assert ids(claim(app, s(1))) == []
    maintenance.cancel(app.engine, s(2), [first])
    assert row(app.engine, first).status == CANCELLED
    assert ids(claim(app, s(3))) == [second]


# -- task and queue limits ---------------------------------------------------------------------


def test_task_concurrency_leaves_room_for_other_tasks(db_url: str) -> None:
    app = new_app(db_url)
    app.task(name="slow", concurrency=2)(lambda n: None)
    app.task(name="fast")(lambda n: None)
    slow = [app.enqueue("slow", {"n": n}, run_at=T0) for n in range(5)]
    fast = [app.enqueue("fast", {"n": n}, run_at=s(1)) for n in range(2)]

    first = claim(app, s(2), limit=3)
    assert ids(first) == slow[:2]
    assert not first.exhausted(3)  # the held ones filled the LIMIT: look again
    assert ids(claim(app, s(2), limit=3)) == fast  # a full scope is left out of the SELECT
    finish(app, store.ClaimBatch(first.tasks[:1], 0, 0), s(3))
    assert ids(claim(app, s(4))) == [slow[2]]


def test_queue_limits_are_shared_by_the_queues_tasks(db_url: str) -> None:
    app = new_app(db_url)
    app.queue("stripe", concurrency=1, rate="2/m")
    app.task(name="charge", queue="stripe")(lambda n: None)
    app.task(name="refund", queue="stripe")(lambda n: None)
    c = app.enqueue("charge", {"n": 0}, run_at=T0)
    r = app.enqueue("refund", {"n": 0}, run_at=T0)
    r2 = app.enqueue("refund", {"n": 1}, run_at=T0)
    first = claim(app, s(1))
    assert ids(first) == [c]
    finish(app, first, s(2))
    second = claim(app, s(3))
    assert ids(second) == [r]
    finish(app, second, s(4))
    held = claim(app, s(5))  # concurrency is free, the rate (2 a minute) is not
    assert ids(held) == [] and held.wake_at == s(61)
    assert ids(claim(app, s(61))) == [r2]


def test_rate_is_a_sliding_window_over_claim_times(db_url: str) -> None:
    app = new_app(db_url)
    app.task(name="api", rate="3/10s")(lambda n: None)
    due = [app.enqueue("api", {"n": n}, run_at=T0) for n in range(8)]
    assert ids(claim(app, T0, limit=2)) == due[:2]
    assert ids(claim(app, s(4))) == due[2:3]  # 3 in (T0-10, T0+4]
    held = claim(app, s(9.999999))
    assert ids(held) == [] and held.exhausted(100)
    assert held.wake_at == s(10)  # the oldest start leaves the window
    assert ids(claim(app, s(10))) == due[3:5]  # (T0, T0+10] still holds the one at T0+4
    assert ids(claim(app, s(13.999999))) == []
    assert ids(claim(app, s(14))) == due[5:6]
    for task_id in due[:6]:
        assert row(app.engine, task_id).attempts == 1
    for task_id in due[6:]:
        assert row(app.engine, task_id).attempts == 0


def test_a_claim_with_an_older_clock_reading_still_counts_every_start(db_url: str) -> None:
    """Runs read the clock before they wait for the lock, so claims arrive out of time order."""
    app = new_app(db_url)
    app.task(name="api", rate="1/10s")(lambda n: None)
    first = app.enqueue("api", {"n": 0}, run_at=T0)
    assert ids(claim(app, T0)) == [first]
    assert ids(claim(app, s(11))) == []  # nothing due: this claim only looks at the window
    late = app.enqueue("api", {"n": 1}, run_at=T0)
    assert ids(claim(app, s(9.5))) == []  # the start at T0 is 9.5 s before: still counted
    assert ids(claim(app, s(10))) == [late]
    # A claim is never logged earlier than a start already logged.
    again = app.enqueue("api", {"n": 2}, run_at=T0)
    batch = claim(app, s(21))
    assert ids(batch) == [again] and batch.tasks[0].started_at == s(21)
    assert ids(claim(app, s(25))) == []


def test_rate_held_tasks_give_no_wake_time_when_none_is_due(db_url: str) -> None:
    app = new_app(db_url)
    app.task(name="api", rate="1/h")(lambda n: None)
    app.enqueue("api", {"n": 0}, run_at=T0)
    assert len(claim(app, T0).tasks) == 1
    assert claim(app, s(1)).wake_at is None  # nothing waits for the window: the run may end


def test_a_claim_with_no_idle_worker_takes_no_limited_task(db_url: str) -> None:
    app = keyed_app(db_url, concurrency=5)
    app.task(name="api", rate="100/s", concurrency=10)(lambda n: None)
    limited = [app.enqueue("api", {"n": n}, run_at=T0) for n in range(3)]
    keyed = app.enqueue("charge", {"account": 1}, run_at=s(1))
    free = app.enqueue("other", {}, run_at=s(1))
    # Per-key limits are claimed ahead; task and queue limits only for idle workers.
    assert ids(claim(app, s(2), cap=0)) == [keyed, free]
    assert ids(claim(app, s(3), cap=2)) == limited[:2]


def test_limits_are_registered_for_stats_and_locks(db_url: str) -> None:
    app = new_app(db_url)
    app.queue("stripe", rate="25/s", concurrency=4)
    app.task(name="mail", rate="100/m")(lambda: None)
    app.task(name="pdf", concurrency=2)(lambda: None)
    app.task(name="plain")(lambda: None)
    begins: list[str] = []

    @event.listens_for(app.engine, "begin")
    def count(_conn: Any) -> None:
        begins.append("begin")

    first = store.start_run(app.engine, host="h", worker="h:1", pid=1, now=T0, limits=app.limits())
    again = store.start_run(
        app.engine, host="h", worker="h:2", pid=2, now=s(1), limits=app.limits()
    )
    assert len(begins) == 2  # a run's start, limits included, is one write transaction
    from tickrun.schema import limits, runs

    with app.engine.connect() as conn:
        stored = {r.scope: r for r in conn.execute(select(limits))}
        assert list(conn.execute(select(runs.c.id).order_by(runs.c.id)).scalars()) == [first, again]
    assert set(stored) == {"queue:stripe", "task:mail", "task:pdf"}
    assert (stored["queue:stripe"].rate_count, stored["queue:stripe"].rate_period) == (25, 1.0)
    assert stored["queue:stripe"].concurrency == 4
    # Registered as they are: the second run's start wrote (and locked) none of them.
    assert {r.updated_at for r in stored.values()} == {T0}

    changed = new_app(db_url)
    changed.queue("stripe", rate="25/s", concurrency=4)
    changed.task(name="mail", rate="100/m")(lambda: None)
    changed.task(name="pdf", concurrency=3)(lambda: None)
    writes: list[str] = []

    @event.listens_for(app.engine, "before_cursor_execute")
    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "tickrun_limits" in statement and not statement.lstrip().startswith("SELECT"):
            writes.append(statement)

    store.start_run(app.engine, host="h", worker="h:3", pid=3, now=s(2), limits=changed.limits())
    with app.engine.connect() as conn:
        stored = {r.scope: r for r in conn.execute(select(limits))}
    assert len(writes) == 1  # only the changed limit
    assert (stored["task:pdf"].concurrency, stored["task:pdf"].updated_at) == (3, s(2))
    assert stored["task:mail"].updated_at == stored["queue:stripe"].updated_at == T0


def test_runs_starting_together_register_a_new_limit_without_deadlock(server_url: str) -> None:
    """Runs that all find a limit's row missing insert it together: the later ones wait for
    the first and write after it. An INSERT that failed on the duplicate followed by an UPDATE
    deadlocked two of them on MariaDB (each held the shared lock of its failed INSERT)."""
    app = App(database_url=server_url)
    app.task(name="rated", rate="3/2s")(lambda: None)
    app.use_database(server_url)
    errors: list[Exception] = []

    def start(pid: int) -> None:
        try:
            store.start_run(
                app.engine, host="h", worker=f"h:{pid}", pid=pid, now=T0, limits=app.limits()
            )
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    with app.engine.connect() as first, first.begin():
        gate.register(first, app.limits(), T0)  # the row, inserted and not committed yet
        others = [threading.Thread(target=start, args=(pid,)) for pid in (2, 3)]
        for thread in others:
            thread.start()
        wait_until(lambda: sessions_waiting(app.engine) >= 2, "both runs to wait for it")
    for thread in others:
        thread.join(60)
    assert errors == []


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "100"}, "rate must look like 25/s"),
        ({"rate": "0/s"}, "at least 1 start"),
        ({"rate": "5/fortnight"}, "rate period 'fortnight'"),
        ({"rate": 5}, "rate must look like"),
        ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"concurrency": -3}, "concurrency must be a whole number >= 1"),
        ({"concurrency": 1.5}, "concurrency must be a whole number >= 1"),
        ({"concurrency": 1, "concurrency_key": "acct"}, "'acct' names no parameter"),
        ({"concurrency_key": "account"}, "needs concurrency=K or ordered=True"),
        ({"ordered": True}, "ordered=True needs concurrency_key"),
        ({"ordered": True, "concurrency_key": "account", "concurrency": 3}, "drop concurrency"),
        ({"ordered": True, "concurrency_key": "account", "on_dead": "skip"}, "on_dead must be"),
    ],
)
def test_bad_limits_are_refused_at_registration(options: dict[str, Any], message: str) -> None:
    app = App()
    with pytest.raises(ConfigError, match=message) as caught:
        app.task(name="t", **options)(lambda account, n=0: None)
    assert "\n" not in str(caught.value)
    assert app.tasks == {}


def test_bad_queue_limits_are_refused() -> None:
    app = App()
    with pytest.raises(ConfigError, match="give rate= or concurrency="):
        app.queue("q")
    with pytest.raises(ConfigError, match="rate must look like"):
        app.queue("q", rate="fast")
    with pytest.raises(ConfigError, match="queue name"):
        app.queue("no spaces", concurrency=1)
    app.queue("q", concurrency=1)
    with pytest.raises(ConfigError, match="configured twice"):
        app.queue("q", concurrency=2)


@pytest.mark.parametrize(
    ("payload", "group", "error", "message"),
    [
        ({"account": [1]}, None, PayloadError, "must be a string or an integer, not \\[1\\]"),
        ({"account": None}, None, PayloadError, "not None"),
        ({"account": True}, None, PayloadError, "not True"),
        ({"account": 1.5}, None, PayloadError, "not 1.5"),
        ({"account": "x" * 300}, None, PayloadError, "longer than 255"),
        ({"account": 1}, "", UsageError, "group must be a string"),
        ({"account": 1}, 42, UsageError, "group must be a string"),
    ],
)
def test_bad_key_values_are_refused_at_enqueue_and_nothing_is_written(
    db_url: str, payload: dict[str, Any], group: Any, error: type[Exception], message: str
) -> None:
    app = keyed_app(db_url, concurrency=1)
    with pytest.raises(error, match=message):
        app.enqueue("charge", payload, group=group)
    with pytest.raises(UsageError, match="has no concurrency_key"):
        app.enqueue("other", {}, group="g")
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 0


def test_a_missing_key_uses_the_parameters_default_or_is_refused(db_url: str) -> None:
    app = new_app(db_url)
    app.task(name="a", concurrency_key="region", concurrency=1)(lambda region="eu": None)
    app.task(name="b", concurrency_key="region", concurrency=1)(lambda region: None)
    assert row(app.engine, app.enqueue("a", {})).group_key == "region=eu"
    with pytest.raises(PayloadError, match="missing"):
        app.enqueue("b", {}, group=None)
    assert row(app.engine, app.enqueue("b", {"region": "us"}, group="r")).group_key == "r"


def test_parse_rate_units() -> None:
    assert parse_rate("25/s", "x") == Rate(25, 1.0)
    assert parse_rate("100 / m", "x") == Rate(100, 60.0)
    assert parse_rate("1000/h", "x") == Rate(1000, 3600.0)
    assert parse_rate("10/30s", "x") == Rate(10, 30.0)
    assert str(Rate(10, 30.0)) == "10/30s" and str(Rate(25, 1.0)) == "25/s"
    assert json.dumps(str(parse_rate("5/d", "x"))) == '"5/d"'


# -- what the commands show --------------------------------------------------------------------

CLI_APP = """
from tickrun import App

app = App()
app.queue("stripe", rate="2/h", concurrency=3)


@app.task(queue="stripe")
def charge(n):
    pass


@app.task(concurrency_key="account", ordered=True)
def event(account, n=0):
    raise RuntimeError("always")


@app.task(concurrency_key="account", concurrency=1, lease=3600)
def sync(account):
    pass
"""


def test_due_stats_and_check_show_what_limits_hold_back(db_url: str, project: Path) -> None:
    ref = write_app(project, CLI_APP)
    env = {"TICKRUN_APP": ref}
    app = new_app(db_url)
    app.task(name="charge", queue="stripe")(lambda n: None)
    app.task(name="event", concurrency_key="account", ordered=True, max_attempts=1)(
        lambda account, n=0: None
    )
    app.task(name="sync", concurrency_key="account", concurrency=1, lease=3600)(
        lambda account: None
    )
    app.queue("stripe", rate="2/h", concurrency=3)
    now = clock.now()
    past = now - timedelta(minutes=10)
    charges = [app.enqueue("charge", {"n": n}, run_at=past) for n in range(3)]
    head = app.enqueue("event", {"account": 9}, run_at=past)
    later = app.enqueue("event", {"account": 9, "n": 1}, run_at=past)
    syncs = [app.enqueue("sync", {"account": 5}, run_at=past) for _ in range(2)]
    # Two charges start (the rate), the first sync holds account 5, the event dies.
    batch = store.claim(
        app.engine,
        names=["charge", "sync", "event"],
        queues=[],
        limit=10,
        worker="w",
        leases={"charge": 60, "sync": 3600, "event": 60},
        now=now,
        limits=app.limits(),
    )
    assert ids(batch) == [*charges[:2], head, syncs[0]]
    store.start_run(app.engine, host="h", worker="h:1", pid=1, now=now, limits=app.limits())
    dead = [c for c in batch.tasks if c.id == head]
    finish(app, store.ClaimBatch(dead, 0, 0), now, DEAD)

    result = tickrun("due", "--json", cwd=project, db=db_url, env=env)
    assert result.returncode == 0, result.stderr
    held = {r["id"]: r["held"] for r in json.loads(result.stdout)}
    assert held == {
        charges[2]: "queue rate (2/h)",
        later: f"waiting for #{head}",
        syncs[1]: "key busy (1/1)",
    }
    table = tickrun("due", cwd=project, db=db_url, env=env).stdout
    assert "held" in table and f"waiting for #{head}" in table

    result = tickrun("stats", "--limits", "--json", cwd=project, db=db_url, env=env)
    assert result.returncode == 0, result.stderr
    [stripe] = json.loads(result.stdout)
    assert {k: stripe[k] for k in ("scope", "rate", "started_in_window", "concurrency")} == {
        "scope": "queue:stripe",
        "rate": "2/h",
        "started_in_window": 2,
        "concurrency": 3,
    }
    assert (stripe["running"], stripe["full"]) == (2, True)
    assert "limits:" in tickrun("stats", cwd=project, db=db_url, env=env).stdout

    result = tickrun("check", cwd=project, db=db_url, env=env)
    assert result.returncode == 1
    assert f"blocked: ordered group 'account=9' is held by dead task {head} (1 task waiting)" in (
        result.stdout
    )
    # Held tasks are due: --max-due-age sees them age (the oldest is held by the rate).
    result = tickrun("check", "--max-due-age", "5m", cwd=project, db=db_url, env=env)
    assert result.returncode == 1
    assert f"due: task {charges[2]} (charge) has been due for 10m" in result.stdout
    app.engine.dispose()


def test_enqueue_group_from_the_command_line(db_url: str, project: Path) -> None:
    ref = write_app(project, CLI_APP)
    env = {"TICKRUN_APP": ref}
    args = ("enqueue", "sync", "--payload", '{"account": 1}', "--json")
    result = tickrun(*args, "--group", "acct:1", cwd=project, db=db_url, env=env)
    assert result.returncode == 0, result.stderr
    task_id = json.loads(result.stdout)["id"]
    app = new_app(db_url)
    assert row(app.engine, task_id).group_key == "acct:1"
    bad = tickrun(
        "enqueue", "sync", "--payload", '{"account": [1]}', cwd=project, db=db_url, env=env
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    bad = tickrun(
        "enqueue",
        "charge",
        "--payload",
        '{"n": 1}',
        "--group",
        "g",
        cwd=project,
        db=db_url,
        env=env,
    )
    assert bad.returncode == 2 and "has no concurrency_key" in bad.stderr
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 1


def test_an_invalid_limit_in_the_app_is_a_one_line_error(project: Path, tmp_path: Path) -> None:
    ref = write_app(project, CLI_APP.replace('rate="2/h"', 'rate="2 per hour"'))
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert tickrun("init", cwd=project, db=db).returncode == 0
    result = tickrun("run", cwd=project, db=db, env={"TICKRUN_APP": ref})
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "rate must look like 25/s" in result.stderr


def test_prune_forgets_old_group_lock_rows_and_claims_recreate_them(db_url: str) -> None:
    from tickrun import maintenance
    from tickrun.schema import limits

    app = keyed_app(db_url, concurrency=1, lease=86400)
    first = app.enqueue("charge", {"account": 1}, run_at=T0)
    second = app.enqueue("charge", {"account": 1}, run_at=T0)
    batch = claim(app, T0)
    assert ids(batch) == [first]

    def scopes() -> set[str]:
        with app.engine.connect() as conn:
            return set(conn.execute(select(limits.c.scope)).scalars())

    if db_url.startswith("sqlite"):
        assert scopes() == set()  # SQLite's write lock serialises claims: no lock rows
    else:
        assert scopes() == {"group:account=1"}
    maintenance.prune(app.engine, s(7200), older_than=3600)
    assert scopes() == set()
    assert ids(claim(app, s(7201))) == []  # the running task still holds the key
    finish(app, batch, s(7202))
    assert ids(claim(app, s(7203))) == [second]


def test_claims_of_unlimited_tasks_beside_limited_ones_touch_no_limit(db_url: str) -> None:
    from sqlalchemy import event

    app = new_app(db_url)
    app.task(name="api", rate="5/s", concurrency=2)(lambda n: None)
    app.task(name="plain")(lambda n: None)
    plain = [app.enqueue("plain", {"n": n}, run_at=T0) for n in range(3)]
    app.enqueue("api", {"n": 0}, run_at=s(5))  # due later: not a candidate now
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", seen)
    try:
        assert ids(claim(app, s(1))) == plain
        assert not any("tickrun_limits" in q or "tickrun_starts" in q for q in statements)
        statements.clear()
        assert len(claim(app, s(6)).tasks) == 1  # a limited candidate: now the gate works
        assert any("tickrun_starts" in q for q in statements)
    finally:
        event.remove(app.engine, "before_cursor_execute", seen)


def test_a_worker_waits_for_future_tasks_not_for_due_ones_a_limit_holds(db_url: str) -> None:
    # A due task held by a blocked ordered group must not count as "claimable now" for an
    # idle worker's wait: that wait would be 0, and the worker would claim in a busy loop.
    app = keyed_app(db_url, ordered=True)
    names = list(app.tasks)
    first = app.enqueue("charge", {"account": 1}, run_at=T0)
    app.enqueue("charge", {"account": 1}, run_at=T0)
    finish(app, claim(app, s(1)), s(2), DEAD)
    assert row(app.engine, first).status == DEAD
    assert store.next_claimable(app.engine, names=names, queues=[], now=s(3))[0] is None
    app.enqueue("other", {}, run_at=s(100))
    assert store.next_claimable(app.engine, names=names, queues=[], now=s(3))[0] == s(100)
