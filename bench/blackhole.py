"""How long a statement waits on a PostgreSQL that stopped answering, with tickrun's settings.

    sudo .venv/bin/python bench/blackhole.py

One network namespace (tests/netns.py) and a throwaway PostgreSQL cluster on its veth pair;
inside the namespace, tickrun's own engine (``tickrun.database.open_engine``: keepalives,
``tcp_user_timeout``, ``connect_timeout``) runs a statement while the link is down:

* *unacknowledged*: the link goes down first, so the statement's packets are never
  acknowledged (``tcp_user_timeout``);
* *no reply*: the statement (``pg_sleep(2)``) is sent and acknowledged, then the link goes
  down, so its reply never comes (the keepalive probes);
* *connect*: a new connection while the link is down (``connect_timeout``).

Prints a table of seconds until the driver gave up. Needs root and iproute2; traffic stays
on the namespace's pair. Every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import SUBNET, Cluster, Network, missing_requirements, sweep_stale  # noqa: E402

PROBE = """
import sys, time
from sqlalchemy import text
from tickrun.database import open_engine
url, case = sys.argv[1], sys.argv[2]
engine = open_engine(url)
if case != "connect":
    conn = engine.connect()
    conn.execute(text("SELECT 1"))
print("ready", flush=True)
sys.stdin.readline()  # the link is down (unacknowledged, connect) or about to go (no reply)
began = time.monotonic()
try:
    if case == "connect":
        engine.connect().execute(text("SELECT 1"))
    else:
        conn.execute(text("SELECT pg_sleep(2)" if case == "no reply" else "SELECT 1"))
    print(f"answered after {time.monotonic() - began:.1f} s")
except Exception as exc:
    print(f"{type(exc).__name__} after {time.monotonic() - began:.1f} s")
"""


def measure(net: Network, url: str, case: str) -> str:
    host = net.hosts[0]
    proc = subprocess.Popen(
        host.argv(sys.executable, "-c", PROBE, url, case),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            return "probe did not start"
        if case != "no reply":
            net.blackhole(host)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if case == "no reply":
            time.sleep(0.5)  # the statement is on the server, acknowledged
            net.blackhole(host)
        out, _ = proc.communicate(timeout=120)
        return out.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        net.restore(host)


def main() -> int:
    reason = missing_requirements()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    sweep_stale()
    net = Network(1)
    cluster = Cluster.make()
    try:
        net.create()
        cluster.start([net.hosts[0].server_address], [f"{SUBNET}.0.0/16"], {})
        url = cluster.url(net.hosts[0].server_address)
        print("| case | result (seconds until the driver gave up) |")
        print("|---|---|")
        for case in ("unacknowledged", "no reply", "connect"):
            print(f"| {case} | {measure(net, url, case)} |")
    finally:
        cluster.destroy()
        net.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
