"""``tickrun worker`` across PostgreSQL restarts, with real processes: a PostgreSQL cluster of
the test's own (initdb in a temporary directory, its own port; tests/netns.py's ``Cluster``)
is restarted with ``pg_ctl restart -m fast``, which ends every connection with "terminating
connection due to administrator command", while a worker runs.

After each restart the worker must log the outage and the recovery once each, start the next
task soon after the server is up (it tries again at once and then with a backoff that starts
over at every outage), LISTEN again at once (an idle worker polling every 30 s is woken by
the next enqueue), never print a traceback, lose no task, and stop with exit 0 on SIGTERM
a few seconds after a restart.

Needs the PostgreSQL server programs (on PATH or in /usr/lib/postgresql/*/bin) and, as root,
a ``postgres`` user to run them as; skipped with the reason otherwise, failed instead when
TICKRUN_TEST_REQUIRE_SERVERS=1 (CI).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import REQUIRE, write_app
from tests.helpers.processes import (
    app_source,
    executions,
    start_worker,
    started,
    twin_app,
    wait_until,
)
from tests.netns import Cluster, cluster_requirements
from tickrun import wakeup
from tickrun.database import open_engine
from tickrun.lifecycle import SUCCEEDED
from tickrun.migrations import init_schema
from tickrun.schema import tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

APP = app_source(
    """
@app.task(lease=60)
def work(n, seconds):
    note(f"start {n} {time.time()!r}")
    time.sleep(seconds)
    note(f"end {n}")
"""
)
RESTARTS = 4
BATCH = 12  # tasks enqueued after each restart: about 4 s of work for two slots
SECONDS = 0.6  # each task's work: slower than the claim-ahead window, so none is prefetched
# From the server being up to the next task's start. A worker that tries again at once and
# then after 0.5, 1, 2 s is back within about as long as the outage lasted (1-2 s here); the
# bound leaves room for a loaded 2-core machine. A backoff that never starts over reached
# 5.7 and 13.6 s by the fourth and fifth restart.
BACK_WITHIN = 5.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = cluster_requirements()
    if reason is not None:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    pg = Cluster.make()
    try:
        pg.start(addresses=(), hba=(), settings={})
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def url(cluster: Cluster) -> Iterator[str]:
    """A fresh database with the tickrun schema on the test's own cluster."""
    url = cluster.url(database=cluster.create_database("tickrun_restart"))
    init_schema(open_engine(url))
    yield url
    open_engine(url).dispose()  # the cluster and its databases go at the module's end


def restart(cluster: Cluster, url: str) -> float:
    """``pg_ctl restart -m fast``; the time (epoch) when it returned with the server up. The
    test's own pooled connections died with the server: it starts afresh too."""
    cluster.pg_ctl("restart", "-m", "fast")
    up = time.time()
    open_engine(url).dispose()
    return up


def starts(project: Path) -> dict[int, float]:
    """The first start of each task (epoch seconds), by its number."""
    first: dict[int, float] = {}
    for line in executions(project):
        word, n, *at = line.split()
        if word == "start":
            first.setdefault(int(n), float(at[0]))
    return first


def first_start_after(project: Path, moment: float) -> float | None:
    return min((at for at in starts(project).values() if at > moment), default=None)


def assert_outages_logged(err: str, outages: int) -> None:
    assert "Traceback" not in err and "Exception during reset" not in err, err
    assert err.count("lost the database") == outages, err
    assert err.count("the database is back") == outages, err
    # The PgBouncer message is for a pooler that cannot deliver, never for a restart.
    assert "no LISTEN/NOTIFY" not in err, err


def assert_all_done_once(url: str, project: Path, count: int) -> None:
    ends = Counter(line for line in executions(project) if line.startswith("end"))
    assert ends == Counter(f"end {n}" for n in range(count)), ends
    with open_engine(url).connect() as conn:
        done = conn.execute(
            select(func.count()).select_from(tasks).where(tasks.c.status == SUCCEEDED)
        ).scalar_one()
    assert done == count


def test_a_busy_worker_is_back_soon_after_every_restart(
    cluster: Cluster, url: str, project: Path
) -> None:
    """Restarts while the worker works through a backlog: the backoff must start over at every
    outage, and each outage and recovery is logged once."""
    write_app(project, APP)
    app = twin_app(url, "work")
    app.enqueue_many(("work", {"n": n, "seconds": SECONDS}) for n in range(BATCH))
    count = BATCH
    worker = start_worker(project, url, "--poll", "30s", "--concurrency", "2")
    wait_until(lambda: started(worker), "the worker to start")
    wait_until(lambda: starts(project), "the first task to start")
    delays = []
    for _ in range(RESTARTS):
        up = restart(cluster, url)
        app.enqueue_many(
            ("work", {"n": n, "seconds": SECONDS}) for n in range(count, count + BATCH)
        )
        count += BATCH
        at = wait_until(lambda up=up: first_start_after(project, up), "a start after the restart")
        delays.append(round(at - up, 2))
    assert max(delays) < BACK_WITHIN, delays
    wait_until(lambda: len(starts(project)) == count, "every task to start", timeout=120)
    code, out, err = worker.stop()
    assert code == 0, err
    assert_outages_logged(err, RESTARTS)
    assert_all_done_once(url, project, count)


def test_an_idle_worker_listens_again_at_once_and_stops_cleanly(
    cluster: Cluster, url: str, project: Path
) -> None:
    """An idle worker polling every 30 s: after a restart the next enqueue must wake it (it
    listens again as soon as the server answers, not after a poll or a retry period), and
    SIGTERM 2.5 s after the restart is a clean stop (exit 0), not "terminating connection due
    to administrator command" from a connection the restart killed (exit 3)."""
    write_app(project, APP)
    app = twin_app(url, "work")
    worker = start_worker(project, url, "--poll", "30s")
    wait_until(lambda: started(worker), "the worker to start")
    app.enqueue("work", {"n": 0, "seconds": 0})
    wait_until(lambda: starts(project), "the first task to start")
    up = restart(cluster, url)
    app.enqueue("work", {"n": 1, "seconds": 0})
    at = wait_until(lambda: first_start_after(project, up), "the task enqueued after the restart")
    assert at - up < BACK_WITHIN, at - up
    time.sleep(max(0.0, up + 2.5 - time.time()))  # the scenario: a stop soon after a restart
    code, out, err = worker.stop()
    assert code == 0, err
    assert "claimed 2" in out, out
    assert_outages_logged(err, 1)
    assert_all_done_once(url, project, 2)


def test_a_listener_on_a_connection_the_restart_ended_is_closed_quietly(
    cluster: Cluster, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cause of the tracebacks after restarts: the listener takes a pooled connection the
    restart had ended, its LISTEN fails, and closing it through the pool rolled it back
    ("QueuePool: Exception during reset or similar", with AdminShutdown's traceback). It is
    closed as a driver connection instead, and the failure is an outage (Lost)."""
    engine = open_engine(url)
    with engine.connect() as conn:
        conn.execute(select(1))  # one connection in the pool, soon ended by the restart
    cluster.pg_ctl("restart", "-m", "fast")
    waker = wakeup.ListenWaker(engine)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(wakeup.Lost, match="terminating connection|connection"):
            waker.connect()
        engine.dispose()  # what the worker does before it tries again
        waker.connect()
    with contextlib.closing(waker):
        assert waker.listening
    assert [r.getMessage() for r in caplog.records] == []
