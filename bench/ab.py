"""Interleaved A/B of one bench.py workload between two checkouts of tickrun.

Each checkout needs its own virtualenv (``.venv``) and runs its own ``bench/bench.py``, so a
base older than a bench feature still runs. Rounds alternate which side goes first; each
round appends a JSON line to ``--log``, and the end prints means, medians, the share of
rounds where head was lower, and a paired sign-flip permutation test of the mean difference.

    .venv/bin/python bench/ab.py --base /tmp/base --db sqlite --workload W3 --rounds 20

A workload that prints several figures (W4: the wake-up latency, then W2 and W3 drained by
workers) is compared on each one named by ``--figure``, from the same runs:

    .venv/bin/python bench/ab.py --base /tmp/base --db postgresql --workload W4 \
        --figure "W4 latency" --figure "W4 W2" --figure "W4 W3" --rounds 6
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


def figures(root: Path, db: str, workload: str, labels: list[str], extra: list[str]) -> list[float]:
    """One ``bench.py --repeat 1`` run; the figure of each label: a rate from its line
    ``LABEL run 1: ... = N/s``, or a median from ``LABEL: median N ms`` (W4's latency)."""
    cmd = [str(root / ".venv/bin/python"), str(root / "bench/bench.py"), "--db", db]
    cmd += ["--workloads", workload, "--repeat", "1", *extra]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    values = []
    for label in labels:
        # Lines read "  [SQLite] W2 run 1: ... = 12,345/s" or "  [SQLite] W4 latency: median".
        pattern = rf"\] {re.escape(label)}(?: run 1: .*?= ([\d,]+)/s|: median ([\d.]+) ms)"
        found = re.search(pattern, out.stdout)
        if not found:
            tail = out.stdout[-2000:] + out.stderr[-2000:]
            sys.exit(f"error: no {label} figure from {root}:\n{tail}")
        values.append(float((found.group(1) or found.group(2)).replace(",", "")))
    return values


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
        f = ",.0f" if statistics.mean(xs) >= 100 else ".2f"  # rates; milliseconds
        return f"{statistics.mean(xs):{f}} / {statistics.median(xs):{f}} / {spread:{f}}"

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
    parser.add_argument(
        "--figure",
        action="append",
        help="a figure of the workload's output to compare (repeatable) [the workload]",
    )
    parser.add_argument("extra", nargs="*", help="more bench.py options, after --")
    opts = parser.parse_args()
    sides = {"base": opts.base.resolve(), "head": opts.head.resolve()}
    labels = opts.figure or [opts.workload]
    rows: dict[str, list[dict]] = {label: [] for label in labels}
    with opts.log.open("a") as log:
        for r in range(opts.rounds):
            meta = {"db": opts.db, "workload": opts.workload, "round": r}
            meta["at"] = time.strftime("%H:%M:%S")
            meta["load"] = Path("/proc/loadavg").read_text().split()[0]
            got = {}
            for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
                got[name] = figures(sides[name], opts.db, opts.workload, labels, opts.extra)
            for i, label in enumerate(labels):
                row = {**meta, "figure": label, "base": got["base"][i], "head": got["head"][i]}
                log.write(json.dumps(row) + "\n")
                rows[label].append(row)
                print(
                    f"round {r + 1}: {label}: base {row['base']:,.1f}, head {row['head']:,.1f}",
                    flush=True,
                )
            log.flush()
    for label in labels:
        name = opts.workload if label == opts.workload else f"{opts.workload} {label!r}"
        print(f"{opts.db} {name}: {summary(rows[label])}")


if __name__ == "__main__":
    main()
