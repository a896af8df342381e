"""A network partition with real hosts: three network namespaces run ``tickrun run`` against a
PostgreSQL cluster of the test's own, and one of them is cut off (see tests/netns.py) for
longer than the lease while it holds tasks.

Every handler works longer than its lease, calling ``ctx.check()`` every 0.15 s, and appends
a start and an end line (host, task id, attempt, wall and monotonic time) to one O_APPEND
file, so executions and their overlaps are computed exactly; all namespaces share the kernel's
clocks. Each host starts one ``tickrun run``; during the partition the healthy hosts also start
one every TICK seconds, as cron would, so the victim's tasks are claimed again as soon as their
leases expire. After the partition, rounds of ``tickrun run`` on the healthy hosts finish what is
left. The test asserts that (a) every task ends succeeded, (b) no two executions of a task
overlap in time, (c) the cut-off run exits 3 within EXIT_BOUND of the cut with a log line
about the lost lease, and (d) the other hosts keep recording successes during the partition.

Needs root, ``ip`` and the PostgreSQL server binaries; skipped with the reason otherwise, or
failed when TICKRUN_TEST_REQUIRE_NETNS=1 (CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

import tickrun
from tests.conftest import cli_env, write_app
from tests.helpers.processes import RunProcess, executions, not_due, task_rows, twin_app, wait_until
from tests.netns import (
    SUBNET,
    Cluster,
    Host,
    Network,
    missing_requirements,
    probe,
    sweep_stale,
)
from tickrun import TaskContext
from tickrun.database import open_engine
from tickrun.lifecycle import SUCCEEDED
from tickrun.schema import attempts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REQUIRE = os.environ.get("TICKRUN_TEST_REQUIRE_NETNS") == "1"

HOSTS = 3
CONCURRENCY = 4  # per host
TASKS = 30
LEASE = 5  # seconds
WORK = (8, 9, 10)  # seconds each handler works, all longer than the lease
PARTITION = 25.0  # seconds the victim is cut off: longer than the lease and than EXIT_BOUND
# During the partition each healthy host also starts a `tickrun run` every TICK seconds, as cron
# would (every minute, compressed): a fresh run claims the victim's tasks as soon as their
# leases expire and starts them at once, so a victim that went on executing them would overlap.
TICK = 3.0
# The cut-off run gives up its leases a margin before they expire (< LEASE after the cut), then
# exits within its PostgreSQL timeouts (connect_timeout, keepalives, tcp_user_timeout: about
# 10-15 s after the database stopped answering).
EXIT_BOUND = 20.0
DEADLINE = 60.0  # for any awaited condition

APP = """\
import os
import time

import tickrun
from tickrun import App

app = App()
HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.environ["PARTITION_HOST"]
LeaseLost = getattr(tickrun, "LeaseLost", None)


def note(*fields):
    line = " ".join(str(f) for f in fields) + "\\n"
    fd = os.open(os.path.join(HERE, "executions.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write per line: lines never interleave
    finally:
        os.close(fd)


def stamp():
    return f"{time.time():.6f} {time.monotonic():.6f}"


@app.task(lease=__LEASE__, max_attempts=10, backoff=1, context=True)
def slow(ctx, seconds):
    note("start", HOST, ctx.task_id, ctx.attempt, stamp())
    outcome = "raised"
    try:
        end = time.monotonic() + seconds
        while True:
            if hasattr(ctx, "check"):  # until the product's ctx.check() lands: the test says so
                ctx.check()
            if time.monotonic() >= end:
                break
            time.sleep(0.15)
        outcome = "done"
    except BaseException as exc:
        if LeaseLost is not None and isinstance(exc, LeaseLost):
            outcome = "lost"
        raise
    finally:
        note("end", HOST, ctx.task_id, ctx.attempt, outcome, stamp())
"""


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"TICKRUN_TEST_REQUIRE_NETNS=1: {reason}", pytrace=False)
    pytest.skip(reason)


# -- fixtures: hosts, a cluster, runs ----------------------------------------------------------


@pytest.fixture(scope="module")
def network(request: pytest.FixtureRequest) -> Network:
    reason = missing_requirements()
    if reason:
        unavailable(reason)
    sweep_stale()
    net = Network(HOSTS)
    request.addfinalizer(net.teardown)  # before create(): a half-made network goes too
    try:
        net.create()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"could not create network namespaces: {exc}")
    return net


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, network: Network) -> Cluster:
    pg = Cluster.make()
    request.addfinalizer(pg.destroy)
    # A transaction whose client vanished mid-way (cut between its statements) would keep its
    # row locks until the server noticed; a production server is configured not to wait long.
    settings = {"idle_in_transaction_session_timeout": "10s", "log_min_messages": "warning"}
    pg.start([h.server_address for h in network.hosts], [f"{SUBNET}.0.0/16"], settings)
    return pg


@pytest.fixture
def database(cluster: Cluster) -> Iterator[str]:
    """A fresh database in the cluster; its name."""
    name = cluster.create_database("partition")
    yield name
    open_engine(cluster.url(database=name)).dispose()


@dataclass
class HostRun(RunProcess):
    """A ``tickrun run`` inside a host; a thread notes the moment it exits."""

    host: Host
    exited_at: float | None = None  # monotonic
    exited_wall: float | None = None

    def _watch(self) -> None:
        self.proc.wait()
        self.exited_at, self.exited_wall = time.monotonic(), time.time()


@pytest.fixture
def start_run(project: Path) -> Iterator[Callable[[Host, str, str, str], HostRun]]:
    started: list[HostRun] = []

    def start(host: Host, url: str, ref: str, tag: str) -> HostRun:
        out, err = project / f"{name(host)}-{tag}.out", project / f"{name(host)}-{tag}.err"
        argv = host.argv(sys.executable, "-m", "tickrun", "run", "--concurrency",
                         str(CONCURRENCY), "--worker", f"{name(host)}/{tag}")  # fmt: skip
        env = cli_env(url, {"TICKRUN_APP": ref, "PARTITION_HOST": name(host)})
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(argv, cwd=project, env=env, stdout=stdout, stderr=stderr)
        run = HostRun(proc, out, err, host)
        started.append(run)
        threading.Thread(target=run._watch, daemon=True).start()
        return run

    yield start
    for run in started:  # a failed test must not leave a run behind
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def name(host: Host) -> str:
    return f"host{host.index}"


def worker_host(worker: str | None) -> str:
    """The host a run's worker name (``host<N>/<tag>``) belongs to."""
    return (worker or "").split("/")[0]


# -- the harness itself -------------------------------------------------------------------------


def test_blackhole_stops_traffic_and_restore_brings_it_back(
    network: Network, cluster: Cluster
) -> None:
    victim, other = network.hosts[0], network.hosts[1]
    for host in network.hosts:
        assert probe(host, cluster.port) == "ok", host
        # No default route: a namespace reaches the root side of its own pair and nothing else.
        routes = subprocess.run(
            ["ip", "-n", host.ns, "route", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert "default" not in routes and routes.count("\n") == 1, routes

    network.blackhole(victim)
    try:
        began = time.monotonic()
        cut = probe(victim, cluster.port, timeout=2)
        took = time.monotonic() - began
        # Silence, not a refusal or "no route": the connection attempt times out.
        assert cut.startswith("failed") and "timeout" in cut, cut
        assert took >= 1.9, f"the probe failed after {took:.2f}s, not by timing out: {cut}"
        assert probe(other, cluster.port) == "ok"
    finally:
        network.restore(victim)
    assert probe(victim, cluster.port) == "ok"


# -- the partition ------------------------------------------------------------------------------


@dataclass
class Execution:
    host: str
    task: int
    attempt: int
    start: float  # wall time
    end: float | None = None
    outcome: str | None = None


def parse_executions(project: Path) -> list[Execution]:
    found: dict[tuple[str, int, int], Execution] = {}
    for line in executions(project):
        kind, host, task, attempt, *rest = line.split()
        key = (host, int(task), int(attempt))
        if kind == "start":
            found[key] = Execution(host, int(task), int(attempt), float(rest[0]))
        else:
            found[key].outcome, found[key].end = rest[0], float(rest[1])
    return list(found.values())


def overlaps(runs: list[Execution], open_end: dict[str, float], origin: float) -> list[str]:
    """Each pair of ``runs`` (executions of one task) whose [start, end] intersect; an
    execution that wrote no end line ends when its host's run ended (``open_end``). Times are
    shown in seconds from ``origin``."""
    found = []
    ends = {id(r): open_end[r.host] if r.end is None else r.end for r in runs}
    spans = sorted(((r.start - origin, ends[id(r)] - origin, r) for r in runs), key=lambda s: s[:2])
    for i, (start, end, a) in enumerate(spans):
        for other_start, other_end, b in spans[i + 1 :]:
            if other_start < end:
                found.append(
                    f"task {a.task}: {a.host} attempt {a.attempt} [{start:+.2f}s, {end:+.2f}s] "
                    f"and {b.host} attempt {b.attempt} [{other_start:+.2f}s, {other_end:+.2f}s] "
                    f"overlap by {min(end, other_end) - other_start:.2f}s"
                )
    return found


def test_partitioned_host_loses_nothing_and_runs_nothing_twice(
    network: Network,
    cluster: Cluster,
    database: str,
    project: Path,
    start_run: Callable[[Host, str, str, str], HostRun],
) -> None:
    began = time.monotonic()
    victim, healthy = network.hosts[0], network.hosts[1:]
    urls = {h.ns: cluster.url(h.server_address, database) for h in network.hosts}
    local = cluster.url(database=database)  # the test's own view, over loopback
    ref = write_app(project, APP.replace("__LEASE__", str(LEASE)))

    init = subprocess.run(
        victim.argv(sys.executable, "-m", "tickrun", "init"),
        cwd=project,
        env=cli_env(urls[victim.ns], None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    engine = open_engine(local)
    app = twin_app(local, "slow", slow={"lease": LEASE, "max_attempts": 10})
    ids = app.enqueue_many(("slow", {"seconds": WORK[i % len(WORK)]}) for i in range(TASKS))

    runs = {h.ns: start_run(h, urls[h.ns], ref, "run") for h in network.hosts}
    started = time.monotonic()

    def busy() -> bool:
        hosts = Counter(e.host for e in parse_executions(project) if e.end is None)
        return all(hosts[name(h)] >= 1 for h in healthy) and hosts[name(victim)] >= CONCURRENCY

    wait_until(busy, "every host to start handlers, the victim on all its slots", DEADLINE)
    held = [r.id for r in task_rows(engine).values() if worker_host(r.worker) == name(victim)]

    # -- cut the victim off; it holds tasks, some of them in their handlers
    cut_wall, cut_at = time.time(), time.monotonic()
    network.blackhole(victim)
    killed_wall: float | None = None
    ticks: list[HostRun] = []
    try:
        with ThreadPoolExecutor(2) as pool:  # the probes take seconds: ticks go on meanwhile
            probes = [pool.submit(probe, h, cluster.port, 2) for h in (victim, healthy[0])]
            next_tick = cut_at + 0.5
            while time.monotonic() < cut_at + PARTITION:
                if time.monotonic() >= next_tick:
                    host = healthy[len(ticks) % len(healthy)]
                    ticks.append(start_run(host, urls[host.ns], ref, f"tick{len(ticks)}"))
                    next_tick += TICK / len(healthy)
                time.sleep(0.05)
            cut_probe, healthy_probe = (f.result() for f in probes)
        victim_run = runs[victim.ns]
        if victim_run.proc.poll() is None:  # it did not exit: stop it before traffic resumes
            killed_wall = time.time()
            victim_run.proc.kill()
            victim_run.proc.wait()
    finally:
        network.restore(victim)
    restore_wall, restored_at = time.time(), time.monotonic()
    assert cut_probe.startswith("failed") and "timeout" in cut_probe, cut_probe
    assert healthy_probe == "ok", healthy_probe
    restored_probe = wait_until(
        lambda: probe(victim, cluster.port) == "ok", "the victim to reach the database again", 20
    )
    assert restored_probe

    # -- drain: the healthy runs go on until none is due; more rounds from healthy hosts until
    # every task is finished (leases held by the victim expire LEASE after its last renewal)
    healthy_exit: dict[str, tuple[int, str]] = {}  # run's tag: exit code, stderr
    for run in [runs[h.ns] for h in healthy] + ticks:
        code, _, err = run.finish(DEADLINE)
        healthy_exit[run.out.stem] = (code, err)
    rounds = 0

    def unfinished() -> int:
        return sum(r.status != SUCCEEDED for r in task_rows(engine).values())

    while unfinished() and rounds < 5 and time.monotonic() - restored_at < DEADLINE:
        wait_until(lambda: not_due(engine) == 0, "the remaining leases to expire", 2 * LEASE + 5)
        more = [start_run(h, urls[h.ns], ref, f"round{rounds}") for h in healthy]
        for run in more:
            code, _, err = run.finish(DEADLINE)
            healthy_exit[run.out.stem] = (code, err)
        rounds += 1
    drained_at = time.monotonic()

    # -- what happened
    victim_run = runs[victim.ns]
    code, victim_out, victim_err = victim_run.finish(5)
    wait_until(lambda: victim_run.exited_at is not None, "the exit watcher", 5)
    exited_after = victim_run.exited_at - cut_at
    victim_end = killed_wall or victim_run.exited_wall
    execs = parse_executions(project)
    open_end = {name(h): time.time() for h in healthy} | {name(victim): victim_end}
    rows = task_rows(engine)
    with engine.connect() as conn:
        history = list(conn.execute(select(attempts).order_by(attempts.c.id)))
    cut_dt, restore_dt = (datetime.fromtimestamp(t, UTC) for t in (cut_wall, restore_wall))
    during = Counter(
        worker_host(h.worker)
        for h in history
        if h.outcome == "succeeded" and cut_dt <= h.finished_at <= restore_dt
    )

    timings = [
        f"setup to first runs started: {started - began:.1f}s",
        f"victim held {len(held)} task(s) at the cut, {cut_at - started:.1f}s after start",
        f"probe from the victim during the cut: {cut_probe}",
        "victim run: "
        + (
            f"still running after the {PARTITION:g}s partition, killed"
            if killed_wall
            else f"exited {code} {exited_after:.1f}s after the cut"
        ),
        f"successes recorded during the partition: {dict(during)}",
        f"healthy runs started during the partition: {len(ticks)}; extra rounds after: {rounds}",
        f"healthy exit codes: {dict(Counter(code for code, _ in healthy_exit.values()))}",
        f"drained {drained_at - restored_at:.1f}s after the restore, "
        f"{drained_at - began:.1f}s after the start",
        f"executions: {len(execs)} for {TASKS} tasks; end outcomes "
        f"{dict(Counter(e.outcome for e in execs))}",
    ]
    print("\n".join(timings))

    problems: list[str] = []
    # The product's part: the handler API the test relies on.
    if not (hasattr(TaskContext, "check") and hasattr(TaskContext, "lease_lost")):
        problems.append("product: TaskContext has no check() / lease_lost yet")
    if not hasattr(tickrun, "LeaseLost"):
        problems.append("product: tickrun.LeaseLost does not exist yet")

    # (a) nothing lost; and each recorded success is an execution that ran to its end
    statuses = Counter(rows[i].status for i in ids)
    if statuses != Counter({SUCCEEDED: TASKS}):
        problems.append(f"(a) not every task succeeded: {dict(statuses)}")
    done = {(e.task, e.attempt) for e in execs if e.outcome == "done"}
    for h in history:
        if h.outcome == "succeeded" and (h.task_id, h.attempt) not in done:
            problems.append(f"(a) task {h.task_id} attempt {h.attempt} recorded a success "
                            "its handler never reached")  # fmt: skip

    # (b) no concurrent execution (times from the cut)
    by_task: dict[int, list[Execution]] = defaultdict(list)
    for e in execs:
        by_task[e.task].append(e)
    for task_id in ids:
        problems += [f"(b) {o}" for o in overlaps(by_task[task_id], open_end, cut_wall)]
    for e in execs:
        if e.end is None and e.host != name(victim):
            problems.append(f"(b) {e.host} never finished task {e.task} attempt {e.attempt}")

    # (c) the cut-off run gives up in time, with exit 3 and a log line about the lost lease
    if killed_wall:
        problems.append(f"(c) the cut-off run had not exited {PARTITION:g}s after the cut "
                        f"(bound {EXIT_BOUND:g}s)")  # fmt: skip
    else:
        if exited_after > EXIT_BOUND:
            problems.append(
                f"(c) the cut-off run exited {exited_after:.1f}s after the cut "
                f"(bound {EXIT_BOUND:g}s)"
            )
        if code != 3:
            problems.append(f"(c) the cut-off run exited {code}, not 3")
        if not any("lease lost" in line.lower() for line in victim_err.splitlines()):
            problems.append(f"(c) no 'lease lost' line in its log: {victim_err[-1500:]!r}")

    # (d) the others keep draining during the partition: every slot finished a task or more
    for h in healthy:
        if during[name(h)] < CONCURRENCY:
            problems.append(
                f"(d) {name(h)} recorded {during[name(h)]} successes during the "
                f"{PARTITION:g}s partition, fewer than its {CONCURRENCY} slots"
            )
    for tag, (code, err) in healthy_exit.items():
        if code != 0:
            problems.append(f"healthy run {tag} exited {code}: {err[-800:]}")

    assert not problems, "\n".join(problems + ["", *timings])
