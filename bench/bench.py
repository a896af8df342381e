"""tickrun benchmark: enqueue, drains, worker latency, ticks, scale and flow control per database.

Run ``make bench`` or ``.venv/bin/python bench/bench.py --help``. Every figure is the median of
``--repeat`` runs with min and max. Every drain counts its handler executions (one appended line
each) and the run fails, exit code 1, on any duplicate or missing execution. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sqlalchemy  # noqa: E402
from benchapp import app  # noqa: E402
from benchdb import BenchDB, Unavailable  # noqa: E402
from tabulate import tabulate  # noqa: E402

import tickrun  # noqa: E402

ALL_DBS = ("sqlite", "postgresql", "mysql")
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9")
W8_KEYS_PER_TASKS = 10  # W8: n tasks over n / 10 ordered keys
W9_RATE = 50  # bench/benchapp.py: rated has rate="50/s"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}
# The targets, per database; None means "measure and report".
TARGETS: dict[str, dict[str, float | None]] = {
    "sqlite": {"w1_one": 3500, "w1_bulk": 50000, "w2": 3500},
    "postgresql": {"w1_one": 1700, "w1_bulk": 40000, "w2": 4200},
    "mysql": {"w1_one": None, "w1_bulk": None, "w2": None},
}
W4_INTERVAL = 0.5  # seconds between two W4 enqueues
W4_POLL = 1.0  # tickrun worker's default --poll
# W4 targets (ms): median and p95 on PostgreSQL (NOTIFY); median where the worker polls.
W4_POLLED: tuple[float, float | None] = (W4_POLL * 500 + 5, None)  # half the poll + 5 ms
W4_TARGETS = {"postgresql": (5.0, 20.0), "sqlite": W4_POLLED, "mysql": W4_POLLED}
W5_BUDGET_MS = 150.0
W6_MIN_RATIO = 0.80
W6_MAX_RSS_MB = 150.0


class BenchFailure(Exception):
    """A run that did not do exactly the work asked: the benchmark stops with exit code 1."""


@dataclass(frozen=True)
class Options:
    dbs: tuple[str, ...]
    workloads: tuple[str, ...]
    n: int
    repeat: int
    w6_finished: int
    w6_due: int
    w6_max_time: float
    sqlite_dir: str | None
    quick: bool


@dataclass
class Proc:
    """One finished ``tickrun run`` process."""

    elapsed: float
    exit_code: int
    max_rss_mb: float
    stdout: str
    stderr: str


@dataclass
class Figure:
    """One row of a table: a measured value over the repeats, and its target if any."""

    workload: str
    measure: str
    unit: str
    values: list[float]
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def row(self) -> list[str]:
        lo, hi = min(self.values), max(self.values)
        spread = f"{fmt(lo, self.unit)}–{fmt(hi, self.unit)}" if len(self.values) > 1 else ""
        met = {None: "", True: "yes", False: "NO"}[self.met]
        return [
            self.workload,
            self.measure,
            f"{fmt(self.median, self.unit)} {self.unit}",
            spread,
            self.target,
            met,
            self.note,
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "measure": self.measure,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": self.values,
            "target": self.target or None,
            "met": self.met,
            "note": self.note or None,
        }


def fmt(value: float, unit: str) -> str:
    if unit in ("tasks/s", "MB") and value >= 100:
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if unit == "%":
        return f"{value:.0f}"
    return f"{value:,.1f}"


@dataclass
class DBResult:
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def find(self, workload: str, measure: str) -> Figure | None:
        for f in self.figures:
            if f.workload == workload and f.measure == measure:
                return f
        return None


# -- processes ------------------------------------------------------------------------------


def tickrun_cmd() -> list[str]:
    """The installed console script, as cron would run it (``python -m tickrun`` without one)."""
    script = Path(sys.executable).parent / "tickrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tickrun"]


def child_env(out: str | None = None) -> dict[str, str]:
    # No inherited TICKRUN_* setting may change what the runs do; the app comes from bench/.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    if out is not None:
        env["TICKRUN_BENCH_OUT"] = out
    return env


def run_processes(
    commands: list[list[str]], env: dict[str, str], cwd: str, deadline: float
) -> tuple[float, list[Proc]]:
    """Start all commands at once; the time from the first start to the last exit.

    Each command runs under bench/launch.py, which times it and reads its own peak RSS (see
    there why the benchmark cannot measure RSS of a child it forks itself).
    """
    launched = []
    for i, cmd in enumerate(commands):
        report = os.path.join(cwd, f"launch-{time.monotonic_ns()}-{i}.json")
        # Output goes to files, not pipes: nothing has to read it while the clock runs.
        out = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        err = tempfile.TemporaryFile()  # noqa: SIM115
        launcher = [sys.executable, "-I", "-S", str(HERE / "launch.py"), report, f"{deadline:g}"]
        proc = subprocess.Popen([*launcher, *cmd], env=env, cwd=cwd, stdout=out, stderr=err)
        launched.append((cmd, proc, report, out, err))
    procs, starts, ends = [], [], []
    for cmd, proc, report, out, err in launched:
        proc.wait()
        texts = []
        for fh in (out, err):
            fh.seek(0)
            texts.append(fh.read().decode(errors="replace"))
            fh.close()
        try:
            with open(report) as fh:
                got = json.load(fh)
            os.remove(report)
        except (OSError, ValueError):
            raise BenchFailure(
                f"launcher failed (exit {proc.returncode}) for {' '.join(cmd)}: {texts[1][-2000:]}"
            ) from None
        if got["killed_after_deadline"]:
            raise BenchFailure(f"{' '.join(cmd)} killed after {deadline:.0f}s: {texts[1][-2000:]}")
        starts.append(got["started"])
        ends.append(got["ended"])
        procs.append(
            Proc(
                got["ended"] - got["started"],
                got["exit_code"],
                got["max_rss_kib"] * 1024 / 1e6,
                texts[0],
                texts[1],
            )
        )
    return max(ends) - min(starts), procs


def drain_deadline(tasks: int) -> float:
    return 300 + tasks / 50


# -- checks ---------------------------------------------------------------------------------


def check_executions(out: str, expected: range, what: str) -> None:
    """Exactly one execution per expected payload, or a BenchFailure naming the difference."""
    try:
        lines = Path(out).read_bytes().split()
    except FileNotFoundError:
        lines = []
    seen = Counter(int(x) for x in lines)
    duplicates = {i: n for i, n in seen.items() if n > 1}
    missing = [i for i in expected if i not in seen]
    unexpected = [i for i in seen if i not in expected]
    if duplicates or missing or unexpected:
        raise BenchFailure(
            f"{what}: {len(lines)} executions for {len(expected)} tasks; "
            f"{len(duplicates)} run more than once (e.g. {sorted(duplicates.items())[:5]}), "
            f"{len(missing)} never ran (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})"
        )


def wait_for_lines(
    out: str, count: int, timeout: float, proc: subprocess.Popen[bytes]
) -> list[str]:
    """The execution log once it has ``count`` lines (a BenchFailure after ``timeout``
    seconds, or when ``proc`` exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = Path(out).read_text().splitlines() if os.path.exists(out) else []
        if len(lines) >= count:
            return lines
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchFailure(f"{len(lines)} of {count} executions after {timeout:g}s")
        time.sleep(0.02)


def measure_latencies(
    cmd: list[str],
    env: dict[str, str],
    cwd: str,
    out: str,
    enqueue: Callable[[int], None],
    samples: int,
) -> list[float]:
    """Start one idle worker (``cmd``), then ``enqueue(i)`` every W4_INTERVAL seconds: the
    milliseconds from the start of each call to its handler's line ``<i> <time.time()>`` in
    ``out``. One untimed task first, so the worker's start is not measured."""
    began: list[float] = []
    with tempfile.TemporaryFile() as err:
        worker = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            enqueue(-1)
            wait_for_lines(out, 1, 60, worker)
            for i in range(samples):
                time.sleep(W4_INTERVAL)
                began.append(time.time())
                enqueue(i)
            lines = wait_for_lines(out, samples + 1, 30, worker)
        finally:
            worker.terminate()
            code = worker.wait(60)
        err.seek(0)
        if code != 0:
            raise BenchFailure(f"W4: {cmd[0]} worker exited {code}: {err.read()[-2000:]!r}")
    starts = {int(i): float(at) for i, at in (line.split() for line in lines)}
    if len(starts) != len(lines):
        raise BenchFailure(f"W4: {len(lines)} executions for {len(starts)} tasks")
    os.remove(out)
    return [(starts[i] - began[i]) * 1000 for i in range(samples)]


def claims(proc: Proc) -> int:
    """The claims a run reports in its summary line."""
    return sum(int(m) for m in re.findall(r"claimed (\d+)", proc.stdout))


def check_drained(
    db: BenchDB, procs: list[Proc], due: int, finished: int, what: str, *, partial: bool = False
) -> int:
    """Check the table after the runs; returns how many tasks ran.

    With ``partial`` (a run stopped by --max-time), the first tasks in claim order ran and the
    rest must still be pending, untouched.
    """
    for p in procs:
        if p.exit_code != 0:
            raise BenchFailure(
                f"{what}: tickrun run exited {p.exit_code}: {p.stdout.strip()} "
                f"{p.stderr.strip()[-2000:]}"
            )
    claimed = sum(claims(p) for p in procs)
    if claimed != due and not (partial and 0 < claimed < due):
        raise BenchFailure(f"{what}: the runs report {claimed} claims for {due} due tasks")
    expected = {"succeeded": finished + claimed}
    if claimed < due:
        expected["pending"] = due - claimed
    counts = db.status_counts()
    if counts != expected:
        raise BenchFailure(f"{what}: task statuses after the runs are {counts}, not {expected}")
    attempts = db.scalar("SELECT COUNT(*) FROM tickrun_attempts")
    if attempts != claimed:
        raise BenchFailure(f"{what}: {attempts} attempts recorded for {claimed} claimed tasks")
    return claimed


# -- workloads ------------------------------------------------------------------------------


class Bench:
    def __init__(self, opts: Options, db: BenchDB, result: DBResult, work: str) -> None:
        self.opts = opts
        self.db = db
        self.result = result
        self.work = work
        self.template = app.task_row("noop", {"i": 0})

    def log(self, message: str) -> None:
        print(f"  [{LABELS[self.db.kind]}] {message}", flush=True)

    def add(self, figure: Figure) -> Figure:
        self.result.figures.append(figure)
        return figure

    def out_file(self) -> str:
        path = os.path.join(self.work, f"executions-{time.monotonic_ns()}.log")
        return path

    # W1 ------------------------------------------------------------------------------------

    def w1(self) -> None:
        n = self.opts.n
        one: list[float] = []
        bulk: list[float] = []
        baseline: list[float] = []
        commits: list[float] = []
        for r in range(self.opts.repeat):
            self.db.reset()
            app.use_database(self.db.url)
            with app.engine.connect():
                pass  # the pool's connection is opened before the clock starts
            started = time.perf_counter()
            for i in range(n):
                app.enqueue("noop", {"i": i})
            one.append(n / (time.perf_counter() - started))
            self.check_enqueued(n, "W1 one at a time")

            self.db.reset()
            app.use_database(self.db.url)
            with app.engine.connect():
                pass
            started = time.perf_counter()
            ids = app.enqueue_many(("noop", {"i": i}) for i in range(n))
            bulk.append(n / (time.perf_counter() - started))
            if len(set(ids)) != n:
                raise BenchFailure(f"W1 bulk: enqueue_many returned {len(set(ids))} ids for {n}")
            self.check_enqueued(n, "W1 bulk")
            self.db.reset()
            baseline.append(self.db.raw_commit_rate(n, task_row=True))
            commits.append(self.db.raw_commit_rate(n, task_row=False))
            self.log(
                f"W1 run {r + 1}: one at a time {one[-1]:,.0f}/s, bulk {bulk[-1]:,.0f}/s, "
                f"bare driver {baseline[-1]:,.0f}/s (2-column table {commits[-1]:,.0f}/s)"
            )
        targets = TARGETS[self.db.kind]
        self.add(self.rate_figure("W1", "enqueue one at a time", one, targets["w1_one"]))
        self.add(
            Figure(
                "W1",
                "floor: bare driver, same row, 1 commit each",
                "tasks/s",
                baseline,
                note="no SQLAlchemy, no tickrun",
            )
        )
        self.add(
            Figure(
                "W1",
                "floor: bare driver, 2-column table",
                "tasks/s",
                commits,
                note="one durable commit alone",
            )
        )
        self.add(self.rate_figure("W1", "enqueue bulk (enqueue_many)", bulk, targets["w1_bulk"]))

    def check_enqueued(self, n: int, what: str) -> None:
        counts = self.db.status_counts()
        if counts != {"pending": n}:
            raise BenchFailure(f"{what}: {counts} tasks in the table after enqueuing {n}")

    @staticmethod
    def rate_figure(
        workload: str, measure: str, values: list[float], target: float | None
    ) -> Figure:
        fig = Figure(workload, measure, "tasks/s", values)
        if target is not None:
            fig.target = f"≥ {target:,.0f}"
            fig.met = fig.median >= target
        return fig

    # W2 / W3 / W6 / W7: drains ------------------------------------------------------------

    def drain(
        self,
        *,
        task: str,
        due: int,
        finished: int,
        processes: int,
        what: str,
        max_time: float | None = None,
        workers: bool = False,
    ) -> tuple[float, list[Proc], float, int]:
        """Fill, settle, then time ``processes`` overlapping runs (``tickrun worker``s with
        ``workers``: each stops after its share of the tasks, ``--max-tasks-per-child``, so
        they all exit when the last task is done).

        Returns (elapsed, procs, fill time, tasks run); fewer than ``due`` tasks run only when
        ``max_time`` (passed as ``--max-time``) stopped the run first.
        """
        self.db.reset()
        template = app.task_row(task, {"i": 0})
        started = time.perf_counter()
        self.db.fill(task, template, finished=finished, due=due)
        fill_time = time.perf_counter() - started
        self.result.extra["settle"] = self.db.settle()
        out = self.out_file()
        cmd = [
            *tickrun_cmd(),
            "--app",
            "benchapp:app",
            "--db",
            self.db.url,
            "worker" if workers else "run",
            "--concurrency",
            "1",
        ]
        if max_time is not None:
            cmd += ["--max-time", f"{max_time:g}"]
        commands = [cmd] * processes
        if workers:
            shares = [due // processes + (i < due % processes) for i in range(processes)]
            commands = [[*cmd, "--max-tasks-per-child", str(share)] for share in shares]
        elapsed, procs = run_processes(commands, child_env(out), self.work, drain_deadline(due))
        ran = check_drained(self.db, procs, due, finished, what, partial=max_time is not None)
        # Claim order is id order here (one priority, one run_at), so the tasks that ran are
        # the first ``ran`` payloads.
        check_executions(out, range(ran), what)
        os.remove(out)
        return elapsed, procs, fill_time, ran

    def w2(self) -> None:
        n = self.opts.n
        rates, rss = [], []
        for r in range(self.opts.repeat):
            elapsed, procs, _, _ = self.drain(
                task="noop", due=n, finished=0, processes=1, what="W2"
            )
            rates.append(n / elapsed)
            rss.append(procs[0].max_rss_mb)
            self.log(
                f"W2 run {r + 1}: {n} tasks in {elapsed:.2f}s = {rates[-1]:,.0f}/s, "
                f"{rss[-1]:.0f} MB"
            )
        self.add(
            self.rate_figure(
                "W2", "drain, 1 run --concurrency 1", rates, TARGETS[self.db.kind]["w2"]
            )
        )
        self.add(Figure("W2", "peak RSS of the run", "MB", rss))

    def w3(self) -> None:
        n = self.opts.n
        rates, spreads = [], []
        for r in range(self.opts.repeat):
            elapsed, procs, _, _ = self.drain(
                task="noop", due=n, finished=0, processes=4, what="W3"
            )
            rates.append(n / elapsed)
            per_run = [claims(p) for p in procs]
            spreads.append(per_run)
            self.log(
                f"W3 run {r + 1}: {n} tasks in {elapsed:.2f}s = {rates[-1]:,.0f}/s, "
                f"claims per run {per_run}"
            )
        fig = Figure(
            "W3", "drain, 4 overlapping runs", "tasks/s", rates, note="0 duplicates, 0 missed"
        )
        w2 = self.result.find("W2", "drain, 1 run --concurrency 1")
        if self.db.kind != "mysql" and w2 is not None:
            fig.target = f"≥ W2 ({fmt(w2.median, 'tasks/s')})"
            fig.met = fig.median >= w2.median
        self.add(fig)
        self.result.extra["w3_claims_per_run"] = spreads

    # W8 / W9: flow control --------------------------------------------------------------

    def enqueue_in_bench_db(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        from tickrun.database import open_engine

        app.use_database(self.db.url)
        app.enqueue_many(items)
        open_engine(self.db.url).dispose()  # no connection of ours stays while runs time

    def w8(self) -> None:
        n = self.opts.n // 2  # 10,000 at the default --n
        keys = max(1, n // W8_KEYS_PER_TASKS)
        rates = []
        for r in range(self.opts.repeat):
            self.db.reset()
            items = [
                ("ordered_step", {"key": k, "seq": q})
                for q in range(W8_KEYS_PER_TASKS)
                for k in range(keys)
            ]
            self.enqueue_in_bench_db(items)
            self.db.settle()
            out = self.out_file()
            cmd = [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, "run"]
            elapsed, procs = run_processes(
                [[*cmd, "--concurrency", "1"]] * 4, child_env(out), self.work, drain_deadline(n)
            )
            check_drained(self.db, procs, len(items), 0, "W8")
            lines = [tuple(map(int, line.split())) for line in Path(out).read_text().splitlines()]
            os.remove(out)
            if Counter(lines) != Counter(
                (k, q) for k, q in ((i["key"], i["seq"]) for _, i in items)
            ):
                raise BenchFailure(f"W8: {len(lines)} executions for {len(items)} tasks")
            order: dict[int, list[int]] = {}
            for k, q in lines:
                order.setdefault(k, []).append(q)
            violations = sum(seqs != sorted(seqs) for seqs in order.values())
            if violations:
                raise BenchFailure(f"W8: {violations} keys ran out of order")
            rates.append(len(items) / elapsed)
            self.log(
                f"W8 run {r + 1}: {len(items)} tasks over {keys} ordered keys in {elapsed:.2f}s "
                f"= {rates[-1]:,.0f}/s, 0 order violations"
            )
        fig = Figure(
            "W8",
            f"drain {keys:,} ordered keys, 4 runs",
            "tasks/s",
            rates,
            note="0 order violations",
        )
        w3 = self.result.find("W3", "drain, 4 overlapping runs")
        if w3 is not None:
            fig.note += f"; {fig.median / w3.median:.0%} of W3"
        self.add(fig)

    def w9(self) -> None:
        seconds = 5.0 if self.opts.quick else 20.0
        total = int(W9_RATE * seconds * 2)  # more than the rate lets through
        peaks, means, sliding = [], [], []
        for r in range(self.opts.repeat):
            self.db.reset()
            self.enqueue_in_bench_db([("rated", {"i": i}) for i in range(total)])
            self.db.settle()
            out = self.out_file()
            cmd = [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, "run"]
            cmd += ["--concurrency", "4", "--max-time", f"{seconds:g}"]
            elapsed, procs = run_processes([cmd] * 4, child_env(out), self.work, 300)
            rows = [line.split() for line in Path(out).read_text().splitlines()]
            os.remove(out)
            ran = len(rows)
            # --max-time releases what a run claimed and had not started: pending again.
            counts = self.db.status_counts()
            attempts = self.db.scalar("SELECT COUNT(*) FROM tickrun_attempts")
            if (
                any(p.exit_code != 0 for p in procs)
                or len({row[0] for row in rows}) != ran
                or counts != {"succeeded": ran, "pending": total - ran}
                or attempts != ran
            ):
                raise BenchFailure(
                    f"W9: {ran} executions, statuses {counts}, {attempts} attempts, exit codes "
                    f"{[p.exit_code for p in procs]}"
                )
            claimed = sorted(float(row[1]) for row in rows)
            most, lo = 0, 0
            for hi, at in enumerate(claimed):  # the most claims in any 1-second window
                while at - claimed[lo] >= 1.0:
                    lo += 1
                most = max(most, hi - lo + 1)
            if most > W9_RATE:
                raise BenchFailure(f"W9: {most} claims within one second, the rate is {W9_RATE}/s")
            # Handler starts per calendar second, the first and last (partial) seconds left out.
            buckets = Counter(int(float(row[2])) for row in rows)
            full = [buckets[sec] for sec in sorted(buckets)[1:-1]] or list(buckets.values())
            peaks.append(max(full))
            means.append(statistics.mean(full))
            sliding.append(most)
            self.log(
                f"W9 run {r + 1}: {ran} starts over {len(buckets)} s: mean {means[-1]:.1f}/s, "
                f"busiest second {peaks[-1]}, most claims in a sliding second {most}"
            )
        target = f"≤ {W9_RATE}"
        self.add(
            Figure(
                "W9",
                "most claims in any 1 s (sliding)",
                "starts",
                sliding,
                target=target,
                met=max(sliding) <= W9_RATE,
            )
        )
        self.add(Figure("W9", "handler starts, busiest full second", "starts", peaks))
        self.add(Figure("W9", "handler starts per full second, mean", "starts/s", means))

    # W4: tickrun worker -------------------------------------------------------------------

    def w4(self) -> None:
        """A worker's wake-up latency, then W2 and W3 drained by workers instead of runs."""
        ms = sorted(self.w4_latencies(20 if self.opts.quick else 200))
        median, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
        self.log(f"W4 latency: median {median:.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms")
        most_median, most_p95 = W4_TARGETS[self.db.kind]
        how = "NOTIFY" if self.db.kind == "postgresql" else f"--poll {W4_POLL:g}s"
        for measure, value, target in (("median", median, most_median), ("p95", p95, most_p95)):
            fig = Figure("W4", f"enqueue to handler start, {measure} ({how})", "ms", [value])
            fig.note = f"{len(ms)} tasks, one every {W4_INTERVAL:g}s"
            if target is not None:
                fig.target, fig.met = f"≤ {target:g}", value <= target
            self.add(fig)
        n = self.opts.n
        for what, processes, of in (("W2", 1, "drain, 1 run --concurrency 1"), ("W3", 4, None)):
            rates = []
            for r in range(self.opts.repeat):
                elapsed, *_ = self.drain(
                    task="noop",
                    due=n,
                    finished=0,
                    processes=processes,
                    what=f"W4 {what}",
                    workers=True,
                )
                rates.append(n / elapsed)
                self.log(
                    f"W4 {what} run {r + 1}: {n} tasks by {processes} worker(s) "
                    f"in {elapsed:.2f}s = {rates[-1]:,.0f}/s"
                )
            workers = "1 worker --concurrency 1" if processes == 1 else "4 workers"
            fig = self.add(Figure("W4", f"{what} drained by {workers}", "tasks/s", rates))
            runs = self.result.find("W2", of) if of else None
            if runs is not None:
                fig.target = f"≥ 90 % of W2 ({fmt(runs.median * 0.9, 'tasks/s')})"
                fig.met = fig.median >= 0.9 * runs.median

    def w4_latencies(self, samples: int) -> list[float]:
        """Milliseconds from the start of each ``enqueue`` call to its handler's start, with
        one idle ``tickrun worker`` at its default poll interval."""
        self.db.reset()
        out = self.out_file()
        cmd = [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, "worker"]
        enqueuer = tickrun.App(database_url=self.db.url)
        enqueuer.task(name="ping")(lambda i: None)
        return measure_latencies(
            cmd,
            child_env(out),
            self.work,
            out,
            lambda i: enqueuer.enqueue("ping", {"i": i}),
            samples,
        )

    def w5(self) -> None:
        self.db.reset()
        self.db.settle()
        cmd = [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, "run"]
        env = child_env(self.out_file())
        python = [sys.executable, "-c", "import sqlalchemy"]
        # What no code of tickrun's can avoid: SQLAlchemy, its dialect and the DB-API driver.
        load_driver = f"from sqlalchemy import make_url; make_url({self.db.url!r}).get_dialect()"
        driver = [sys.executable, "-c", load_driver + ".import_dbapi()"]
        bare = [sys.executable, "-c", "pass"]
        ticks, imports, drivers, bares = [], [], [], []
        # One untimed round first: the first start of anything reads files from disk.
        for r in range(self.opts.repeat + 1):
            tick_s, (tick,) = run_processes([cmd], env, self.work, 60)
            if tick.exit_code != 0 or "claimed 0" not in tick.stdout:
                raise BenchFailure(f"W5: empty tick failed: {tick.stdout} {tick.stderr[-2000:]}")
            import_s, _ = run_processes([python], env, self.work, 60)
            driver_s, _ = run_processes([driver], env, self.work, 60)
            bare_s, _ = run_processes([bare], env, self.work, 60)
            if r:
                ticks.append(tick_s * 1000)
                imports.append(import_s * 1000)
                drivers.append(driver_s * 1000)
                bares.append(bare_s * 1000)
        over = [t - i for t, i in zip(ticks, imports, strict=True)]
        self.add(Figure("W5", "empty tick (tickrun run, nothing due)", "ms", ticks))
        self.add(Figure("W5", "python -c 'import sqlalchemy'", "ms", imports))
        self.add(Figure("W5", "  + this database's dialect and driver", "ms", drivers))
        self.add(Figure("W5", "python -c pass", "ms", bares))
        fig = Figure("W5", "empty tick minus import sqlalchemy", "ms", over)
        fig.target = f"≤ {W5_BUDGET_MS:.0f}"
        fig.met = statistics.median(ticks) - statistics.median(imports) <= W5_BUDGET_MS
        self.add(fig)
        self.log(
            f"W5: tick {statistics.median(ticks):.0f} ms, "
            f"import sqlalchemy {statistics.median(imports):.0f} ms"
        )

    def w6(self) -> None:
        due, finished = self.opts.w6_due, self.opts.w6_finished
        rates, rss, fills, done = [], [], [], []
        plans = {}
        for r in range(self.opts.repeat):
            if r == 0:
                plans = self.explain_after_fill(due, finished)
            elapsed, procs, fill, ran = self.drain(
                task="noop",
                due=due,
                finished=finished,
                processes=1,
                what="W6",
                max_time=self.opts.w6_max_time,
            )
            rates.append(ran / elapsed)
            rss.append(procs[0].max_rss_mb)
            fills.append(fill)
            done.append(ran)
            self.log(
                f"W6 run {r + 1}: fill {fill:.1f}s, {ran} of {due} tasks in {elapsed:.2f}s = "
                f"{rates[-1]:,.0f}/s, {rss[-1]:.0f} MB"
            )
        self.result.extra["w6_claim_plan"] = plans
        self.result.extra["w6_tasks_run"] = done
        fig = Figure("W6", f"drain {due:,} due beside {finished:,} finished", "tasks/s", rates)
        if min(done) < due:
            fig.note = (
                f"stopped by --max-time {self.opts.w6_max_time:g}s after "
                f"{', '.join(f'{d:,}' for d in done)} tasks"
            )
        self.add(fig)
        w2 = self.result.find("W2", "drain, 1 run --concurrency 1")
        if w2 is not None:
            ratio = Figure(
                "W6", "drain rate relative to W2", "%", [100 * v / w2.median for v in rates]
            )
            ratio.target = f"≥ {W6_MIN_RATIO:.0%}"
            ratio.met = statistics.median(rates) / w2.median >= W6_MIN_RATIO
            self.add(ratio)
        fig = Figure("W6", "peak RSS of the run", "MB", rss)
        fig.target = f"≤ {W6_MAX_RSS_MB:.0f}"
        fig.met = fig.median <= W6_MAX_RSS_MB and max(rss) <= W6_MAX_RSS_MB
        self.add(fig)
        self.add(Figure("W6", "table fill (not a target)", "s", fills))
        self.w6_empty_tick(finished)

    def w6_empty_tick(self, finished: int) -> None:
        """W5 beside the finished rows: what cron pays every minute once the table has aged.

        Not in the issue's list; it catches claims whose cost grows with finished rows when
        nothing (or less than a batch) is due, which a bulk drain hides.
        """
        self.db.reset()
        self.db.fill("noop", self.template, finished=finished, due=0)
        self.db.settle()
        cmd = [*tickrun_cmd(), "--app", "benchapp:app", "--db", self.db.url, "run"]
        env = child_env(self.out_file())
        ticks = []
        for r in range(self.opts.repeat + 1):
            tick_s, (tick,) = run_processes([cmd], env, self.work, 600)
            if tick.exit_code != 0 or "claimed 0" not in tick.stdout:
                raise BenchFailure(f"W6: empty tick failed: {tick.stdout} {tick.stderr[-2000:]}")
            if r:
                ticks.append(tick_s * 1000)
        fig = Figure("W6", f"empty tick beside {finished:,} finished", "ms", ticks)
        w5 = self.result.find("W5", "empty tick (tickrun run, nothing due)")
        if w5 is not None:
            fig.note = f"W5, empty table: {fmt(w5.median, 'ms')} ms"
        self.add(fig)
        self.log(f"W6 empty tick beside {finished:,} finished: {statistics.median(ticks):.0f} ms")

    def explain_after_fill(self, due: int, finished: int) -> dict[str, str]:
        """The claim query's plan right after the load, and after the database settled."""
        self.db.reset()
        self.db.fill("noop", self.template, finished=finished, due=due)
        names = sorted(app.tasks)
        plans = {"after load": self.db.explain_claim(names)}
        self.db.settle()
        plans["after settle"] = self.db.explain_claim(names)
        if self.db.kind == "postgresql":
            plans["after settle, default planner settings"] = self.db.explain_claim(
                names, as_claimed=False
            )
        return plans

    def w7(self) -> None:
        n = self.opts.n
        rates = []
        for r in range(self.opts.repeat):
            elapsed, _, _, _ = self.drain(
                task="noop_timeout", due=n, finished=0, processes=1, what="W7"
            )
            rates.append(n / elapsed)
            self.log(
                f"W7 run {r + 1}: {n} tasks with timeout in {elapsed:.2f}s = {rates[-1]:,.0f}/s"
            )
        self.add(Figure("W7", "drain, task with timeout=60", "tasks/s", rates))
        w2 = self.result.find("W2", "drain, 1 run --concurrency 1")
        if w2 is not None:
            self.add(
                Figure(
                    "W7",
                    "rate relative to W2 (no timeout)",
                    "%",
                    [100 * v / w2.median for v in rates],
                )
            )


# -- reporting ------------------------------------------------------------------------------


def byte_compile() -> None:
    """Write the .pyc files that ``pip install`` would have written.

    An editable install leaves tickrun as sources, and this machine sets
    PYTHONDONTWRITEBYTECODE=1, so without this every timed process would compile tickrun's
    modules again (about 25 ms of W5's empty tick here), which no installed tickrun does.
    """
    for target in (Path(tickrun.__file__).parent, HERE):
        compileall.compile_dir(target, quiet=1)


def machine() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, shell=True, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "disk": sh("lsblk -d -o NAME,ROTA,TYPE,SIZE --noheadings | tr -s ' '"),
        "filesystem": sh(f"df -T {tempfile.gettempdir()} | tail -1 | tr -s ' '"),
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "tickrun": tickrun.__version__,
        "git_head": sh(f"git -C {HERE.parent} rev-parse --short HEAD"),
        # The engine measured is the working tree's, uncommitted edits included.
        "engine_uncommitted": [
            line.strip()
            for line in sh(f"git -C {HERE.parent} status --porcelain -- tickrun").splitlines()
        ],
    }


def print_table(result: DBResult) -> None:
    label = LABELS[result.kind]
    print()
    if result.skipped:
        print(f"{label}: skipped ({result.skipped})")
        return
    version = result.settings.get("version", "")
    print(f"{label} {version}")
    print(
        tabulate(
            [f.row() for f in result.figures],
            headers=["workload", "measure", "median", "min–max", "target", "met", "note"],
            tablefmt="github",
        )
    )
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items() if k != "version")
    print(f"settings: {settings}")
    loads = result.extra.get("load_1min_at_start", {})
    if loads:
        print(
            "1-min load average at each workload's start: "
            + ", ".join(f"{w} {v}" for w, v in loads.items())
        )
    for when, plan in result.extra.get("w6_claim_plan", {}).items():
        print(f"W6 claim plan ({when}):\n  " + plan.replace("\n", "\n  "))


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=",".join(ALL_DBS), help="sqlite,postgresql,mysql")
    parser.add_argument(
        "--workloads", default=",".join(ALL_WORKLOADS), help="W1,W2,W3,W4,W5,W6,W7,W8,W9"
    )
    parser.add_argument("--n", type=int, help="tasks per W1/W2/W3/W7 run [20000]")
    parser.add_argument("--repeat", type=int, help="runs per figure [3; 1 with --quick]")
    parser.add_argument("--w6-finished", type=int, help="finished rows for W6 [1000000]")
    parser.add_argument("--w6-due", type=int, help="due rows for W6 [100000]")
    parser.add_argument(
        "--w6-max-time",
        type=float,
        default=180.0,
        help="seconds a W6 run may take (tickrun run --max-time); the rate is then measured "
        "over the tasks it ran [180]",
    )
    parser.add_argument("--sqlite-dir", help="directory for the SQLite files [the temp dir]")
    parser.add_argument("--quick", action="store_true", help="small sizes: a correctness check")
    args = parser.parse_args(argv)
    dbs = tuple(d.strip() for d in args.db.split(",") if d.strip())
    workloads = tuple(w.strip().upper() for w in args.workloads.split(",") if w.strip())
    for d in dbs:
        if d not in ALL_DBS:
            parser.error(f"unknown database {d!r} (choose from {', '.join(ALL_DBS)})")
    for w in workloads:
        if w not in ALL_WORKLOADS:
            parser.error(f"unknown workload {w!r} (choose from {', '.join(ALL_WORKLOADS)})")
    quick = args.quick

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Options(
        dbs=dbs,
        workloads=workloads,
        n=pick(args.n, 20_000, 500),
        repeat=pick(args.repeat, 3, 1),
        w6_finished=pick(args.w6_finished, 1_000_000, 20_000),
        w6_due=pick(args.w6_due, 100_000, 2_000),
        w6_max_time=args.w6_max_time,
        sqlite_dir=args.sqlite_dir,
        quick=quick,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    byte_compile()
    started = datetime.now(UTC)
    info = machine()
    print(
        f"tickrun {tickrun.__version__} benchmark, {started:%Y-%m-%d %H:%M} UTC, "
        f"{info['nproc']} CPUs ({info['cpu']}), load {info['loadavg_at_start'][0]:.2f}; "
        f"n={opts.n}, repeat={opts.repeat}, W6 {opts.w6_finished:,} finished + {opts.w6_due:,} due",
        flush=True,
    )
    order = [
        w for w in ("W1", "W5", "W2", "W3", "W4", "W7", "W8", "W9", "W6") if w in opts.workloads
    ]
    results: list[DBResult] = []
    failure: BenchFailure | None = None
    with tempfile.TemporaryDirectory(prefix="tickrun-bench-work-") as work:
        for kind in opts.dbs:
            result = DBResult(kind)
            results.append(result)
            try:
                db = BenchDB.create(kind, opts.sqlite_dir)
            except Unavailable as exc:
                result.skipped = f"server unreachable: {exc}"
                print(f"skipping {LABELS[kind]}: {result.skipped}", flush=True)
                continue
            except ImportError as exc:
                result.skipped = f"driver missing: {exc}"
                print(f"skipping {LABELS[kind]}: {result.skipped}", flush=True)
                continue
            print(f"{LABELS[kind]}: {db.kind} database ready", flush=True)
            try:
                result.settings = db.settings()
                bench = Bench(opts, db, result, work)
                loads = result.extra.setdefault("load_1min_at_start", {})
                for workload in order:
                    loads[workload] = round(os.getloadavg()[0], 2)
                    print(f"  [{LABELS[kind]}] {workload}, load {loads[workload]}", flush=True)
                    getattr(bench, workload.lower())()
            except BenchFailure as exc:
                failure = exc
                print(f"FAILED on {LABELS[kind]}: {exc}", file=sys.stderr, flush=True)
            finally:
                db.drop()
            if failure is not None:
                break
    finished = datetime.now(UTC)
    for result in results:
        print_table(result)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "machine": {
            **info,
            "loadavg_at_end": os.getloadavg(),
            "git_head_at_end": machine()["git_head"],
        },
        "options": {
            "n": opts.n,
            "repeat": opts.repeat,
            "w6_finished": opts.w6_finished,
            "w6_due": opts.w6_due,
            "w6_max_time": opts.w6_max_time,
            "workloads": list(opts.workloads),
            "quick": opts.quick,
            "command": tickrun_cmd(),
        },
        "failure": str(failure) if failure else None,
        "databases": {
            r.kind: {"skipped": r.skipped}
            if r.skipped
            else {
                "settings": r.settings,
                "figures": [f.as_json() for f in r.figures],
                **r.extra,
            }
            for r in results
        },
    }
    suffix = "-quick" if opts.quick else ""
    path = HERE / f"results-{started:%Y-%m-%dT%H%M}{suffix}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten: {path}")
    return exit_code(failure)


def exit_code(failure: BenchFailure | None) -> int:
    """1 after a failed check, said on stderr as ``error: ...``; 0 otherwise."""
    if failure is not None:
        print(f"error: benchmark FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
