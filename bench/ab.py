"""Interleaved A/B of one bench.py workload between two checkouts of tickrun.

Each checkout needs its own virtualenv (``.venv``) and runs its own ``bench/bench.py``, so a
base older than a bench feature still runs. Rounds alternate which side goes first; each
round appends a JSON line to ``--log``, and the end prints means, medians, the share of
rounds where head was lower, and a paired sign-flip permutation test of the mean difference.

    .venv/bin/python bench/ab.py --base /tmp/base --db sqlite --workload W3 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_figure(root: Path, db: str, workload: str, extra: list[str]) -> float:
    cmd = [str(root / ".venv/bin/python"), str(root / "bench/bench.py"), "--db", db]
    cmd += ["--workloads", workload, "--repeat", "1", *extra]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    found = re.search(rf"{workload} run 1: .*?= ([\d,]+)/s", out.stdout)
    if not found:
        tail = out.stdout[-2000:] + out.stderr[-2000:]
        sys.exit(f"error: no {workload} figure from {root}:\n{tail}")
    return float(found.group(1).replace(",", ""))


def permutation_p(diffs: list[float], resamples: int = 20_000) -> float:
    observed = abs(statistics.mean(diffs))
    rng = random.Random(1)
    hits = sum(
        abs(statistics.mean(d if rng.random() < 0.5 else -d for d in diffs)) >= observed
        for _ in range(resamples)
    )
    return hits / resamples


def summary(rows: list[dict]) -> str:
    base = [r["base"] for r in rows]
    head = [r["head"] for r in rows]
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    lower = sum(d < 0 for d in diffs)

    def side(xs: list[float]) -> str:
        spread = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):,.0f} / {statistics.median(xs):,.0f} / {spread:,.0f}"

    return (
        f"{len(rows)} rounds; base mean / median / sd {side(base)}; head {side(head)}; "
        f"head - base {100 * (statistics.mean(head) / statistics.mean(base) - 1):+.1f} %; "
        f"head lower in {lower} of {len(rows)}; p = {permutation_p(diffs):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--head", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--workload", default="W3")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--log", type=Path, default=Path("ab.jsonl"))
    parser.add_argument("extra", nargs="*", help="more bench.py options, after --")
    opts = parser.parse_args()
    sides = {"base": opts.base.resolve(), "head": opts.head.resolve()}
    rows: list[dict] = []
    with opts.log.open("a") as log:
        for r in range(opts.rounds):
            row: dict = {"db": opts.db, "workload": opts.workload, "round": r}
            row["at"] = time.strftime("%H:%M:%S")
            row["load"] = Path("/proc/loadavg").read_text().split()[0]
            for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
                row[name] = one_figure(sides[name], opts.db, opts.workload, opts.extra)
            log.write(json.dumps(row) + "\n")
            log.flush()
            rows.append(row)
            print(f"round {r + 1}: base {row['base']:,.0f}, head {row['head']:,.0f}", flush=True)
    print(f"{opts.db} {opts.workload}: {summary(rows)}")


if __name__ == "__main__":
    main()
