"""tickrun beside its peers: the same workloads, interleaved, in one invocation.

    pip install -e '.[bench-peers]'        # pgqueuer, procrastinate, huey, Celery + Redis
    .venv/bin/python bench/peers.py --n 10000 --repeat 3
    .venv/bin/python bench/peers.py --quick   # small sizes: a correctness check

W1 (one at a time, and in batches of ``--batch`` a call), W5 (an empty drain), W2 (one
process drains ``--n`` due tasks), W3 (four processes), W4 (enqueue to handler start, one idle
worker) for tickrun on each database and for every peer on the store it supports. Within each
round, every workload runs for every system in turn, the order rotating from round to round,
so a busy machine slows all of them alike and the ratios within a round stay meaningful. Every
drain is checked as bench.py checks tickrun's: each task's handler ran exactly once (one line
per execution in a shared log), every process exited 0, and the system's own store holds no
unfinished job. Beside them, the physical limit of each store: one durable single-row commit
through the bare driver. See bench/README.md, "Side by side with peers".
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchapp import app  # noqa: E402
from benchdb import BenchDB, Unavailable  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench import (  # noqa: E402
    LABELS,
    BenchFailure,
    byte_compile,
    check_drained,
    check_executions,
    child_env,
    drain_deadline,
    exit_code,
    machine,
    measure_latencies,
    run_processes,
    tickrun_cmd,
)

PEERS = ("pgqueuer", "procrastinate", "huey", "celery")
WORKLOADS = ("W1", "W5", "W2", "W3", "W4")  # the order they run in within a round
STORES = ("sqlite", "postgresql", "mysql", "redis")
STORE_LABELS = {**LABELS, "redis": "Redis"}
REDIS_URL = os.environ.get("TICKRUN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# A Redis-backed peer is compared with tickrun on this database (the W4 comparison).
REDIS_COMPARED_WITH = "postgresql"


class System(Protocol):
    """tickrun on one database, or one peer (bench/peer_*.py ``Adapter``)."""

    name: str
    store: str
    how: str

    def env(self) -> dict[str, str]: ...
    def reset(self) -> None: ...
    def settle(self) -> None: ...
    def enqueue_one(self, n: int) -> float: ...
    def enqueue_bulk(self, n: int, batch: int) -> float | None: ...
    def fill(self, n: int) -> None: ...
    def queued(self) -> int: ...
    def problems_after_drain(self, n: int) -> str | None: ...
    def drain_cmd(self) -> list[str] | None: ...
    def worker_cmd(self, index: int) -> list[str]: ...
    def enqueue_ping(self, i: int) -> None: ...
    def close(self) -> None: ...


class Tickrun:
    """tickrun on one BenchDB, through the same methods as the peers' adapters."""

    name = "tickrun"
    how = "tickrun run --concurrency 1; W4: tickrun worker"

    def __init__(self, db: BenchDB) -> None:
        self.db = db
        self.store = db.kind
        self.procs: list[Any] = []
        self.pinger: Any = None

    def env(self) -> dict[str, str]:
        return {}

    def reset(self) -> None:
        self.db.reset()
        app.use_database(self.db.url)
        with app.engine.connect():
            pass  # the pool's connection is opened before any clock starts
        self.pinger = None

    def settle(self) -> None:
        self.db.settle()

    def enqueue_one(self, ids: range) -> float:
        app.use_database(self.db.url)  # one app for every database: point it at this one
        begin = time.perf_counter()
        for i in ids:
            app.enqueue("noop", {"i": i})
        return time.perf_counter() - begin

    def enqueue_bulk(self, ids: range, batch: int) -> float | None:
        app.use_database(self.db.url)
        begin = time.perf_counter()
        for lo in range(ids.start, ids.stop, batch):
            app.enqueue_many(("noop", {"i": i}) for i in range(lo, min(ids.stop, lo + batch)))
        return time.perf_counter() - begin

    def fill(self, n: int) -> None:
        self.db.fill("noop", app.task_row("noop", {"i": 0}), finished=0, due=n)

    def queued(self) -> int:
        counts = self.db.status_counts()
        return counts.get("pending", 0) if set(counts) <= {"pending"} else -1

    def problems_after_drain(self, n: int) -> str | None:
        try:
            check_drained(self.db, self.procs, n, 0, "tickrun")
        except BenchFailure as exc:
            return str(exc)
        return None

    def _cmd(self, command: str) -> list[str]:
        return [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, command]

    def drain_cmd(self) -> list[str] | None:
        return [*self._cmd("run"), "--concurrency", "1"]

    def worker_cmd(self, index: int) -> list[str]:
        return self._cmd("worker")

    def enqueue_ping(self, i: int) -> None:
        if self.pinger is None:
            import tickrun

            self.pinger = tickrun.App(database_url=self.db.url)
            self.pinger.task(name="ping")(lambda i: None)
        self.pinger.enqueue("ping", {"i": i})

    def close(self) -> None:
        pass  # the database is dropped by main(), after the peers that share it closed


class Floor:
    """The physical limit under one-at-a-time enqueues: one durable single-row commit through
    the bare DB-API driver (bench/README, "What bounds the figures"), into a two-column table
    of the database tickrun uses. ``single`` on SQLite: one autocommit INSERT (the statement
    is its own transaction, fsync'd at synchronous=FULL), as huey enqueues, where tickrun and
    the other floor run BEGIN IMMEDIATE / INSERT / COMMIT. Redis: one LPUSH round trip, which
    is not durable as this Redis is configured. ``task_row``: tickrun's own row into
    tickrun_tasks, with its indexes (more WAL to write per commit), as bench.py's floor."""

    name = "bare driver"

    def __init__(
        self, store: str, db: BenchDB | None, *, single: bool = False, task_row: bool = False
    ) -> None:
        self.store, self.db, self.single, self.task_row = store, db, single, task_row
        if store == "redis":
            self.label = "limit: 1 LPUSH (not durable here)"
        elif task_row:
            self.label = "floor: bare driver, tickrun's row"
        elif single:
            self.label = "limit: 1 autocommit INSERT"
        else:
            self.label = "limit: 1 durable single-row commit"

    def enqueue_one(self, ids: range) -> float:
        if self.db is not None:
            rate = self.db.raw_commit_rate(len(ids), task_row=self.task_row, single=self.single)
            return len(ids) / rate
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        key = f"tickrun_bench_limit_{uuid.uuid4().hex[:8]}"
        try:
            r.ping()
            begin = time.perf_counter()
            for i in ids:
                r.lpush(key, i)
            return time.perf_counter() - begin
        finally:
            r.delete(key)
            r.close()


@dataclass
class Measure:
    """One figure of one system: its values in each round (W4: every sample)."""

    workload: str
    store: str
    system: str
    unit: str  # "tasks/s" (higher is better) or "ms" (lower is better)
    rounds: dict[int, list[float]] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [v for values in self.rounds.values() for v in values]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def in_round(self, r: int) -> float | None:
        return statistics.median(self.rounds[r]) if r in self.rounds else None


@dataclass
class Run:
    opts: argparse.Namespace
    work: str
    dbs: dict[str, BenchDB] = field(default_factory=dict)
    measures: dict[tuple[str, str, str], Measure] = field(default_factory=dict)
    loads: list[tuple[str, float]] = field(default_factory=list)
    round: int = 0

    def record(self, workload: str, system: System | Floor, unit: str, value: float) -> None:
        key = (workload, system.store, system.name)
        m = self.measures.setdefault(key, Measure(workload, system.store, system.name, unit))
        m.rounds.setdefault(self.round, []).append(value)

    def settle(self, system: System) -> None:
        """What a long-lived database has done by itself after a bulk load: each system's own
        step (tickrun: BenchDB.settle; huey: a WAL checkpoint), and on PostgreSQL, where all
        the systems share one database, VACUUM ANALYZE of all of it and a CHECKPOINT."""
        system.settle()
        if system.store == "postgresql":
            engine = self.dbs["postgresql"].engine
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
                conn.exec_driver_sql("CHECKPOINT")

    def out_file(self) -> str:
        return os.path.join(self.work, f"executions-{time.monotonic_ns()}.log")


# -- workloads ------------------------------------------------------------------------------


def w1(run: Run, systems: list[System], floors: list[Floor]) -> None:
    """Enqueues, interleaved finely: every system (and floor) enqueues ``--batch`` tasks in
    turn, the order rotating, until each has enqueued ``--n``; its rate is ``n`` over the sum
    of its own turns. A busy machine's swings, which last seconds, so fall on all of them."""
    n, chunk = run.opts.n, run.opts.batch
    for what, bulk in (("W1 one at a time", False), (f"W1 bulk, {chunk:,} a call", True)):
        takers: list[System | Floor] = [*systems, *([] if bulk else floors)]
        for system in systems:
            system.reset()
        seconds: dict[int, float] = {id(t): 0.0 for t in takers}
        for turn, lo in enumerate(range(0, n, chunk)):
            ids = range(lo, min(n, lo + chunk))
            k = turn % len(takers)
            for taker in takers[k:] + takers[:k]:
                if isinstance(taker, Floor):
                    seconds[id(taker)] += taker.enqueue_one(ids)
                    continue
                took = taker.enqueue_bulk(ids, chunk) if bulk else taker.enqueue_one(ids)
                if took is None:  # no batch form: left out, and said so in the table
                    takers.remove(taker)
                    continue
                seconds[id(taker)] += took
        for taker in takers:
            if not isinstance(taker, Floor):
                queued = taker.queued()
                if queued != n:
                    raise BenchFailure(f"{taker.name} {what}: {queued} queued after {n} enqueues")
            label = taker.label if isinstance(taker, Floor) else what
            run.record(label, taker, "tasks/s", n / seconds[id(taker)])


def drain(run: Run, system: System, processes: int, what: str) -> float:
    """Fill, settle, then time ``processes`` overlapping drains: each system's own command that
    exits once the queue is empty, or (Celery) workers stopped once every task has run."""
    n = run.opts.n
    system.reset()
    system.fill(n)
    run.settle(system)
    out = run.out_file()
    env = {**child_env(out), **system.env()}
    cmd = system.drain_cmd()
    if cmd is not None:
        elapsed, procs = run_processes([cmd] * processes, env, run.work, drain_deadline(n))
        failed = [p for p in procs if p.exit_code != 0]
        if failed:
            raise BenchFailure(
                f"{system.name} {what}: exit {failed[0].exit_code}: {failed[0].stderr[-2000:]}"
            )
        if isinstance(system, Tickrun):
            system.procs = procs
    else:
        workers = [system.worker_cmd(k) for k in range(processes)]
        elapsed = run_until_done(workers, env, run.work, out, n, drain_deadline(n))
    check_executions(out, range(n), f"{system.name} {what}")
    os.remove(out)
    problem = system.problems_after_drain(n)
    if problem:
        raise BenchFailure(f"{system.name} {what}: {problem}")
    return n / elapsed


def run_until_done(
    commands: list[list[str]], env: dict[str, str], cwd: str, out: str, n: int, deadline: float
) -> float:
    """Start workers that never exit by themselves; stop them (SIGTERM, their graceful stop)
    once ``out`` holds ``n`` executions. Seconds from the first start to the last exit; the
    log is read every 10 ms, which the figure includes."""
    errs = [tempfile.TemporaryFile() for _ in commands]  # noqa: SIM115 - closed below
    begin = time.monotonic()
    procs = [
        subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=e)
        for c, e in zip(commands, errs, strict=True)
    ]
    try:
        while count_lines(out) < n:
            if any(p.poll() is not None for p in procs) or time.monotonic() - begin > deadline:
                raise BenchFailure(f"{commands[0][0]}: {count_lines(out)} of {n} executions")
            time.sleep(0.01)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
        elapsed = time.monotonic() - begin
        texts = []
        for e in errs:
            e.seek(0)
            texts.append(e.read().decode(errors="replace"))
            e.close()
    # -SIGTERM: a worker stopped before it had set up its handler (the others had done all
    # the work by then). Whether every task ran exactly once is checked from the log anyway.
    bad = [c for c in codes if c not in (0, -signal.SIGTERM)]
    if bad:
        raise BenchFailure(f"{commands[0][0]} exited {codes}: {texts[codes.index(bad[0])][-2000:]}")
    return elapsed


def count_lines(path: str) -> int:
    try:
        return Path(path).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def w2(run: Run, system: System) -> None:
    run.record("W2 drain, 1 process", system, "tasks/s", drain(run, system, 1, "W2"))


def w3(run: Run, system: System) -> None:
    run.record("W3 drain, 4 processes", system, "tasks/s", drain(run, system, 4, "W3"))


def w4(run: Run, system: System) -> None:
    system.reset()
    out = run.out_file()
    env = {**child_env(out), **system.env()}
    ms = measure_latencies(
        system.worker_cmd(0), env, run.work, out, system.enqueue_ping, run.opts.w4_samples
    )
    # Every sample is kept: the figure is the median over all rounds' samples.
    for value in ms:
        run.record("W4 enqueue to handler start", system, "ms", value)


def w5(run: Run, system: System) -> None:
    system.reset()
    run.settle(system)
    cmd = system.drain_cmd()
    if cmd is None:
        return  # no command that runs what is due and exits (Celery)
    env = {**child_env(run.out_file()), **system.env()}
    run_processes([cmd], env, run.work, 60)  # untimed: the first start reads files from disk
    seconds, (proc,) = run_processes([cmd], env, run.work, 60)
    if proc.exit_code != 0:
        raise BenchFailure(f"{system.name} W5: exit {proc.exit_code}: {proc.stderr[-2000:]}")
    run.record("W5 empty drain (process start to exit)", system, "ms", seconds * 1000)


RUNNERS = {"W2": w2, "W3": w3, "W4": w4, "W5": w5}  # W1 runs all systems at once


# -- set-up ---------------------------------------------------------------------------------


def redis_settings() -> dict[str, str] | None:
    try:
        import redis

        r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        got = {
            k: str(v) for k in ("appendonly", "appendfsync", "save") for v in [r.config_get(k)[k]]
        }
        got["version"] = str(r.info("server")["redis_version"])
        r.close()
        return got
    except Exception:  # noqa: BLE001 - unreachable or no client: the Redis peers are skipped
        return None


def load_peers(names: list[str], cfg: dict[str, Any], stores: set[str]) -> list[System]:
    peers: list[System] = []
    # Read at import by the peers' apps, here as in their workers (bench/peer_*.py).
    os.environ["BENCH_PEER_PG_DSN"] = cfg["pg_dsn"]
    for name in names:
        try:
            module = importlib.import_module(f"peer_{name}")
        except ImportError as exc:
            print(f"skipping {name}: not installed ({exc}); pip install -e '.[bench-peers]'")
            continue
        if module.Adapter.store not in stores:
            print(f"skipping {name}: {module.Adapter.store} is not measured in this run")
            continue
        peers.append(module.Adapter(cfg))
    return peers


def ratios(tickrun: Measure, peer: Measure) -> list[float]:
    """How many times better tickrun was in each round (its median there, W4's over its
    samples): > 1 means tickrun ahead. Ratios are taken within a round, where both ran beside
    the same load, never across rounds."""
    out = []
    for r in sorted(set(tickrun.rounds) & set(peer.rounds)):
        mine, theirs = tickrun.in_round(r), peer.in_round(r)
        assert mine is not None and theirs is not None
        out.append(theirs / mine if tickrun.unit == "ms" else mine / theirs)
    return out


def ratio_text(values: list[float]) -> str:
    if not values:
        return ""
    text = f"{statistics.median(values):.2f}×"
    return text + f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else text


def report(run: Run) -> tuple[list[list[str]], list[list[str]]]:
    rows = []
    for (workload, store, name), m in run.measures.items():
        if name in ("tickrun", Floor.name):
            continue
        base_store = REDIS_COMPARED_WITH if store == "redis" else store
        t = run.measures.get((workload, base_store, "tickrun"))
        rows.append([workload, STORE_LABELS[store], name, fmt(m), spread(m)])
        rows[-1].append(ratio_text(ratios(t, m)) if t else "")
    for (workload, store, name), m in run.measures.items():
        if name in ("tickrun", Floor.name):
            rows.append([workload, STORE_LABELS[store], name, fmt(m), spread(m), ""])
    order = {
        w: i for i, w in enumerate(["W1 one", "limit", "floor", "W1 bulk", "W5", "W2", "W3", "W4"])
    }
    names = {n: i for i, n in enumerate(["tickrun", *PEERS, Floor.name])}
    rows.sort(
        key=lambda r: (
            min(v for k, v in order.items() if r[0].startswith(k)),
            STORES.index(next(k for k, v in STORE_LABELS.items() if v == r[1])),
            names[r[2]],
        )
    )
    return rows, targets(run)


def fmt(m: Measure) -> str:
    return f"{m.median:,.0f} {m.unit}" if m.median >= 100 else f"{m.median:.1f} {m.unit}"


def spread(m: Measure) -> str:
    """min–max over the rounds (W4: over every sample); W4's median is over every sample."""
    lo, hi = min(m.values), max(m.values)
    return f"{lo:,.0f}–{hi:,.0f}" if lo >= 100 else f"{lo:.1f}–{hi:,.1f}"


def targets(run: Run) -> list[list[str]]:
    """Issue 29's targets, from the ratios within each round (their median and range)."""
    got = run.measures
    out = []
    bulk = f"W1 bulk, {run.opts.batch:,} a call"
    for store in STORES:
        mine = got.get((bulk, store, "tickrun"))
        peers = [m for (w, s, n), m in got.items() if (w, s) == (bulk, store) and n != "tickrun"]
        if mine and peers:
            per_round = [min(vs) for vs in zip(*(ratios(mine, p) for p in peers), strict=True)]
            best = max(peers, key=lambda m: m.median).system
            row = ["W1 bulk ≥ 1.5× the best peer", STORE_LABELS[store]]
            out.append([*row, f"{ratio_text(per_round)} (best: {best})", yes(per_round, 1.5)])
        one = got.get(("W1 one at a time", store, "tickrun"))
        floors = [
            m
            for (w, s, n), m in got.items()
            if s == store and n == Floor.name and w.startswith("limit")
        ]
        if one and floors and store != "redis":
            # The cheapest durable commit is the limit: the faster floor in each round.
            per_round = []
            for r in sorted(one.rounds):
                limit = max(v for f in floors if (v := f.in_round(r)) is not None)
                per_round.append((one.in_round(r) or 0) / limit)
            text = f"{statistics.median(per_round):.0%} ({min(per_round):.0%}–{max(per_round):.0%})"
            row = ["W1 one at a time ≥ 90 % of the commit limit", STORE_LABELS[store]]
            out.append([*row, text, yes(per_round, 0.9)])
    pg = "postgresql"
    for workload, want, what in (
        ("W4 enqueue to handler start", 2.0, "W4 ≤ ½ pgqueuer's median"),
        ("W5 empty drain (process start to exit)", 1.0, "W5 ≤ pgqueuer's"),
        ("W2 drain, 1 process", 1.5, "W2 (tickrun run) ≥ 1.5× pgqueuer"),
    ):
        mine, peer = got.get((workload, pg, "tickrun")), got.get((workload, pg, "pgqueuer"))
        if mine and peer:
            r = ratios(mine, peer)
            measured = f"{ratio_text(r)}: tickrun {fmt(mine)}, pgqueuer {fmt(peer)}"
            out.append([what, "PostgreSQL", measured, yes(r, want)])
    return out


def yes(per_round: list[float], want: float) -> str:
    return "met" if statistics.median(per_round) >= want else "NOT met"


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql", help="tickrun's databases")
    parser.add_argument("--peers", default=",".join(PEERS), help=",".join(PEERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=",".join(WORKLOADS))
    parser.add_argument("--n", type=int, help="tasks per W1, W2, W3 run [20000; --quick 300]")
    parser.add_argument("--repeat", type=int, help="rounds [3; --quick 1]")
    parser.add_argument("--batch", type=int, default=1000, help="W1 bulk: tasks a call [1000]")
    parser.add_argument("--w4-samples", type=int, help="W4 samples per round [60; --quick 5]")
    parser.add_argument("--sqlite-dir", help="directory for SQLite files [the temp dir]")
    parser.add_argument("--quick", action="store_true", help="small sizes: a correctness check")
    opts = parser.parse_args(argv)
    opts.dbs = [d for d in opts.db.split(",") if d]
    opts.peer_names = [p for p in opts.peers.split(",") if p]
    opts.workload_list = [w.upper() for w in opts.workloads.split(",") if w]
    for d in opts.dbs:
        if d not in LABELS:
            parser.error(f"unknown database {d!r} (choose from {', '.join(LABELS)})")
    for p in opts.peer_names:
        if p not in PEERS:
            parser.error(f"unknown peer {p!r} (choose from {', '.join(PEERS)})")
    for w in opts.workload_list:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS)})")
    opts.n = opts.n or (300 if opts.quick else 20_000)
    opts.repeat = opts.repeat or (1 if opts.quick else 3)
    opts.w4_samples = opts.w4_samples or (5 if opts.quick else 60)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    byte_compile()
    started = datetime.now(UTC)
    info = machine()
    print(
        f"tickrun beside peers, {started:%Y-%m-%d %H:%M} UTC, {info['nproc']} CPUs "
        f"({info['cpu']}), load {info['loadavg_at_start'][0]:.2f}, commit {info['git_head']}; "
        f"n={opts.n}, rounds={opts.repeat}, W4 samples/round={opts.w4_samples}",
        flush=True,
    )
    systems: list[System] = []
    settings: dict[str, Any] = {}
    failure: BenchFailure | None = None
    with tempfile.TemporaryDirectory(prefix="tickrun-peers-work-") as work:
        run = Run(opts, work)
        dbs = run.dbs
        try:
            for kind in opts.dbs:
                try:
                    dbs[kind] = BenchDB.create(kind, opts.sqlite_dir)
                except (Unavailable, ImportError) as exc:
                    print(f"skipping {LABELS[kind]}: {exc}", flush=True)
            redis = redis_settings()
            if redis is None:
                print(f"skipping Redis: {REDIS_URL} does not answer", flush=True)
            stores = set(dbs) | ({"redis"} if redis else set())
            systems = [Tickrun(db) for db in dbs.values()]
            cfg = {
                "pg_dsn": dbs["postgresql"].url.replace("+psycopg", "")
                if "postgresql" in dbs
                else "",
                "redis_url": REDIS_URL,
                "sqlite_dir": opts.sqlite_dir,
                "bin": str(Path(sys.executable).parent),
                "run_id": uuid.uuid4().hex[:10],
            }
            systems += load_peers(opts.peer_names, cfg, stores)
            settings = {k: db.settings() for k, db in dbs.items()}
            if redis:
                settings["redis"] = redis
            floors = [Floor(kind, db) for kind, db in dbs.items()]
            floors += [Floor(kind, db, task_row=True) for kind, db in dbs.items()]
            if "sqlite" in dbs:
                floors.append(Floor("sqlite", dbs["sqlite"], single=True))
            if redis:
                floors.append(Floor("redis", None))
            for r in range(opts.repeat):
                run.round = r
                turn = r % len(systems)
                ordered = systems[turn:] + systems[:turn]  # a different system first each round
                run.loads.append((f"round {r + 1}", os.getloadavg()[0]))
                print(f"round {r + 1}: load {os.getloadavg()[0]:.2f}", flush=True)
                for workload in [w for w in WORKLOADS if w in opts.workload_list]:
                    if workload == "W1":
                        w1(run, ordered, floors)
                    for system in ordered if workload != "W1" else []:
                        RUNNERS[workload](run, system)
                    line = ", ".join(
                        f"{m.system} {STORE_LABELS[m.store]} {m.in_round(r):,.1f}"
                        for m in run.measures.values()
                        if m.workload.startswith(workload) and r in m.rounds
                    )
                    print(f"  {workload}: {line}", flush=True)
        except BenchFailure as exc:
            failure = exc
            print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        finally:
            for system in systems:
                system.close()
            for db in dbs.values():
                db.drop()
    finished = datetime.now(UTC)
    rows, goals = report(run)
    print()
    print(
        tabulate(
            rows,
            headers=[
                "workload",
                "store",
                "system",
                "median",
                "min–max",
                "tickrun ahead by (per round)",
            ],
            tablefmt="github",
        )
    )
    if goals:
        print("\nissue 29's targets, from the ratios within each round (median, min–max):")
        print(tabulate(goals, headers=["target", "database", "measured", ""], tablefmt="github"))
    for system in systems:
        print(f"{system.name} ({STORE_LABELS[system.store]}): {system.how}")
    load_end = os.getloadavg()
    print(f"load average at the end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    suffix = "-quick" if opts.quick else ""
    path = HERE / f"results-peers-{started:%Y-%m-%dT%H%M}{suffix}.json"
    path.write_text(
        json.dumps(
            {
                "started": started.isoformat(timespec="seconds"),
                "finished": finished.isoformat(timespec="seconds"),
                "machine": {**info, "loadavg_at_end": load_end},
                "options": {k: v for k, v in vars(opts).items()},
                "settings": settings,
                "loads": run.loads,
                "failure": str(failure) if failure else None,
                "measures": [vars(m) for m in run.measures.values()],  # values by round
                "targets": goals,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"written: {path}")
    return exit_code(failure)


if __name__ == "__main__":
    sys.exit(main())
