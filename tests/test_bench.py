"""The benchmark itself keeps working: ``bench.py --quick`` on SQLite runs every workload at
small sizes, and each drain's own checks (every task ran exactly once, every run exited 0, the
statuses and attempts add up) fail it with exit code 1. A change to the engine's internals
(the claim's statements, say) must not leave ``make bench`` broken."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.slow


def run_bench_script(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """One of bench/'s scripts, with no TICKRUN_* setting inherited; the results files it
    writes into bench/ are removed again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
    before = set(BENCH.glob("results-*.json"))
    try:
        return subprocess.run(
            [sys.executable, *args],
            env={**env, "TMPDIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for written in set(BENCH.glob("results-*.json")) - before:
            written.unlink()


def test_the_quick_benchmark_passes_on_sqlite(tmp_path: Path) -> None:
    done = run_bench_script([str(BENCH / "bench.py"), "--quick", "--db", "sqlite"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"):
        assert f"| {workload} " in done.stdout, workload


def test_the_ab_script_reads_both_sides_figures(tmp_path: Path) -> None:
    """``bench/ab.py`` parses bench.py's per-run lines: a change to their wording breaks it."""
    log = tmp_path / "ab.jsonl"
    root = BENCH.parent
    done = run_bench_script(
        [str(BENCH / "ab.py"), "--base", str(root), "--head", str(root)]
        + ["--db", "sqlite", "--workload", "W2", "--rounds", "2", "--log", str(log)]
        + ["--", "--quick"],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    assert all(r["base"] > 0 and r["head"] > 0 for r in rows), rows
    assert "sqlite W2: 2 rounds; base mean / median / sd " in done.stdout, done.stdout


# What `pip install -e '.[bench-peers]'` brings; `make test` does not install it.
PEER_MODULES = ("pgqueuer", "asyncpg", "procrastinate", "huey", "celery", "redis")


def test_the_quick_side_by_side_benchmark_passes(tmp_path: Path) -> None:
    """``bench/peers.py --quick``: tickrun and every peer whose store answers run W1-W5, and
    every drain's executions are checked for duplicates and misses (exit code 1 otherwise)."""
    missing = [m for m in PEER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"the bench-peers extra is not installed ({', '.join(missing)} missing): "
            "pip install -e '.[bench-peers]'"
        )
    done = run_bench_script(
        [str(BENCH / "peers.py"), "--quick", "--db", "sqlite,postgresql"], tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = [("SQLite", "tickrun"), ("SQLite", "huey")]
    if "skipping PostgreSQL" not in done.stdout:
        expected += [("PostgreSQL", s) for s in ("tickrun", "pgqueuer", "procrastinate")]
    if "skipping Redis" not in done.stdout:
        expected.append(("Redis", "celery"))
    for store, system in expected:
        for workload in ("W1 one at a time", "W2 drain, 1 process", "W3 drain, 4 processes"):
            row = [line for line in done.stdout.splitlines() if line.startswith(f"| {workload}")]
            assert any(f"| {store} " in r and f"| {system} " in r for r in row), (
                workload,
                store,
                system,
                done.stdout[-3000:],
            )
    assert "issue 29's targets" in done.stdout
