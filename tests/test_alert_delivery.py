"""Alert delivery with real ``tickrun run`` processes on every database: a run SIGKILLed after
a task became dead, in the middle of delivering its alert, still gets the alert out through
the next run; overlapping runs deliver each alert once.

The receiver is a real HTTP server on 127.0.0.1 in the test process. Runs overlap by
construction: the receiver holds every request until requests from two runs have arrived.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.conftest import cli_env, tickrun, write_app
from tests.helpers.background import _background
from tests.helpers.processes import DEADLINE, RunProcess, wait_until
from tickrun import clock, outbox
from tickrun.schema import alerts

pytestmark = pytest.mark.slow

JOBS = """
from tickrun import App, Fail

app = App()


@app.task
def doomed(n):
    raise Fail(f"gone {n}")
"""


class HoldingReceiver:
    """Records every request; while ``hold`` is set, answers none until ``senders`` distinct
    senders (X-Tickrun-Sender) have been seen, or ``release`` is set."""

    def __init__(self, senders: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.acked: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.senders = senders
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.requests.append(
                        {"body": body, "sender": self.headers["X-Tickrun-Sender"]}
                    )
                    seen = {r["sender"] for r in receiver.requests}
                    if receiver.senders and len(seen) >= receiver.senders:
                        receiver.release.set()
                receiver.arrived.set()
                if not receiver.release.wait(DEADLINE):
                    return  # never answered
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the sender died meanwhile: no acknowledgement reached it
                with receiver.lock:
                    receiver.acked.append(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def alert_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(alerts).order_by(alerts.c.id)))


def test_a_run_killed_while_delivering_leaves_the_alert_to_the_next_run(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, JOBS)
    receiver = HoldingReceiver()
    try:
        env = {
            "TICKRUN_APP": ref,
            "TICKRUN_ALERT_WEBHOOK": receiver.url,
            "TICKRUN_ALERT_TIMEOUT": "1s",  # the claim's lease: 5 alerts x 1 s + 10 s
        }
        enq = tickrun("enqueue", "doomed", "--payload", '{"n": 1}', cwd=project, db=db_url, env=env)
        task_id = int(enq.stdout)
        run = _start(project, db_url, env, tag="killed")
        # The task is dead and its alert is in the receiver's hands, unanswered: kill the run.
        assert receiver.arrived.wait(DEADLINE), "the run never sent the alert"
        run.proc.send_signal(signal.SIGKILL)
        assert run.finish()[0] == -signal.SIGKILL
        (row,) = alert_rows(engine)
        assert (row.status, row.task_id, row.claim_token is not None) == (
            "pending",
            task_id,
            True,
        )
        receiver.release.set()  # from now on it answers at once
        wait_until(
            lambda: alert_rows(engine)[0].claimable_at <= datetime.now(UTC),
            "the killed run's delivery lease to expire",
        )
        result = tickrun("run", cwd=project, db=db_url, env=env)
        assert result.returncode == 0, result.stderr  # no task became dead in this run
        assert "1 alert sent" in result.stdout, result.stdout
    finally:
        receiver.close()
    (row,) = alert_rows(engine)
    assert row.status == "delivered"
    # Sent twice: the killed run never saw an answer to its try (at least once: a receiver
    # drops the copy by alert_id); the delivery recorded is the next run's.
    assert [r["body"]["alert_id"] for r in receiver.requests] == [row.id, row.id]
    assert row.attempts == 1 and row.claim_token is None


def _start(project: Path, db_url: str, env: dict[str, str], tag: str) -> RunProcess:
    """``start_run`` with alert settings in the environment too."""
    out, err = project / f"{tag}.out", project / f"{tag}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickrun", "run"],
            cwd=project,
            env=cli_env(db_url, env),
            stdout=stdout,
            stderr=stderr,
        )
    _background.append(proc)
    return RunProcess(proc, out, err)


def test_overlapping_runs_deliver_each_alert_once(
    db_url: str, backend: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, JOBS)
    closed = "http://127.0.0.1:9/hooks/s3cr3t"  # discard port: nothing listens
    env = {"TICKRUN_APP": ref, "TICKRUN_ALERT_WEBHOOK": closed}
    for n in range(40):
        tickrun(
            "enqueue", "doomed", "--payload", json.dumps({"n": n}), cwd=project, db=db_url, env=env
        )
    # The receiver is down: 40 dead tasks, 40 alerts waiting.
    assert tickrun("run", cwd=project, db=db_url, env=env).returncode == 1
    rows = alert_rows(engine)
    assert len(rows) == 40 and {r.status for r in rows} == {"pending"}
    assert len(outbox.make_due(engine, None, clock.now())) == 40

    receiver = HoldingReceiver(senders=2)
    count = 4 if backend == "sqlite" else 8
    try:
        env = {
            "TICKRUN_APP": ref,
            "TICKRUN_ALERT_WEBHOOK": receiver.url,
            "TICKRUN_ALERT_TIMEOUT": "90s",  # the first run's request waits for a second run
        }
        runs = [_start(project, db_url, env, tag=f"run{i}") for i in range(count)]
        results = [r.finish(timeout=3 * DEADLINE) for r in runs]
    finally:
        receiver.close()
    for code, out, err in results:
        assert code == 0, out + err
        assert "Traceback" not in out + err and "s3cr3t" not in out + err
    delivered = Counter(b["alert_id"] for b in receiver.acked)
    assert delivered == Counter({r.id: 1 for r in rows}), delivered
    assert len(receiver.requests) == 40  # nothing was sent twice
    assert {r.status for r in alert_rows(engine)} == {"delivered"}
    assert len({r["sender"] for r in receiver.requests}) >= 2  # the runs really overlapped
