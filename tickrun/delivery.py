"""Delivering the alerts outbox: claim due rows, send each to its target, record the result.

A run delivers in a thread of its own (:class:`Deliverer`), so a slow or dead receiver never
holds up claiming, recording or lease renewal: it starts with the run (alerts earlier runs
could not deliver), wakes when the run records a dead task, and gets a bounded time at the
end of the run for the last ones. A failed delivery is retried with backoff by later rounds
and later runs; a target that failed is left alone by this process for BROKEN_FOR seconds
(its other alerts wait, untried), so a dead receiver costs one timeout, not one per alert.
Nothing here can change a task or a run's exit code: every error is logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from tickrun import clock, outbox
from tickrun.backoff import exponential
from tickrun.failures import describe
from tickrun.notify import SendError, Targets, post, run_command, webhook_body

if TYPE_CHECKING:
    from tickrun.app import App

log = logging.getLogger("tickrun.alerts")

BATCH = 5  # alerts claimed at once: the lease covers sending all of them one by one
POLL = 60.0  # seconds between rounds in a long run, for alerts whose backoff ended
END_BUDGET = 30.0  # seconds a run's end may spend on its last deliveries
RETRY_DELAY = exponential(base=30, factor=4, cap=3600)  # 30 s, 2 min, 8 min, ... an hour
BROKEN_FOR = 30.0  # seconds a target that just failed is not tried again by this process


@dataclass
class Report:
    delivered: int = 0
    failed: int = 0


def _lease(targets: Targets) -> float:
    """How long a claim of BATCH alerts stays ours: sending each takes at most the timeout."""
    return BATCH * targets.timeout + 10


def send(alert: outbox.Alert, targets: Targets, app: App | None) -> None:
    """Deliver one alert to its target; SendError (one line, URLs masked) when it fails."""
    doc = alert.document
    if alert.target == "webhook" and targets.webhook:
        post(
            targets.webhook,
            webhook_body(doc, targets.format),
            timeout=targets.timeout,
            # The id lets a receiver drop a duplicate (at least once); the sender, see who sent it.
            headers={"X-Tickrun-Alert-Id": str(alert.id), "X-Tickrun-Sender": _sender()},
        )
    elif alert.target == "command" and targets.command:
        run_command(targets.command, json.dumps(doc).encode(), timeout=targets.timeout)
    elif alert.target == "hook" and app is not None and app.dead_hooks:
        for hook in app.dead_hooks:
            try:
                hook(dict(doc))
            except Exception as exc:  # a user's hook must never take the run down
                raise SendError(f"@app.on_dead {_name(hook)} raised {describe(exc)[0]}") from None
    else:
        raise SendError(f"target {alert.target} is not configured in this process")


def _sender() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class Deliverer:
    """Delivers due alerts of the configured targets: in rounds (:meth:`deliver_due`), or in
    a background thread (:meth:`start`, :meth:`wake`, :meth:`stop`)."""

    def __init__(self, engine: Engine, app: App | None, targets: Targets) -> None:
        self.engine = engine
        self.app = app
        self.targets = targets
        self.report = Report()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        # target -> (its error, until when it is not tried again): a target that failed is left
        # alone for a while, so its other alerts wait for their backoff without a timeout each.
        self._broken: dict[str, tuple[str, float]] = {}

    # -- rounds ---------------------------------------------------------------------------

    def deliver_due(self, deadline: float | None = None) -> Report:
        """Claim and send due alerts until none is left, or ``deadline`` (monotonic) passes;
        what this round delivered and failed."""
        round_report = Report()
        names = self.targets.names
        broken = self._broken
        while names and (deadline is None or time.monotonic() < deadline):
            for target, (_, until) in list(broken.items()):
                if time.monotonic() >= until:
                    del broken[target]
            wanted = [n for n in names if n not in broken]
            if not wanted:
                break
            batch = outbox.claim(
                self.engine, wanted, limit=BATCH, lease=_lease(self.targets), now=clock.now()
            )
            if not batch:
                break
            done: list[outbox.Alert] = []
            failures: list[tuple[outbox.Alert, str]] = []
            untried: list[outbox.Alert] = []
            for alert in batch:
                if deadline is not None and time.monotonic() >= deadline:
                    untried.append(alert)
                elif alert.target in broken:
                    failures.append((alert, f"not tried: {broken[alert.target][0]}"))
                else:
                    try:
                        send(alert, self.targets, self.app)
                    except SendError as exc:
                        if alert.target != "hook":  # a hook's failure is one alert's, and cheap
                            broken[alert.target] = (str(exc), time.monotonic() + BROKEN_FOR)
                        failures.append((alert, str(exc)))
                    else:
                        done.append(alert)
            now = clock.now()
            outbox.delivered(self.engine, done, now)
            outbox.failed(
                self.engine,
                [
                    (a, error, now + timedelta(seconds=RETRY_DELAY(a.attempts + 1)))
                    for a, error in failures
                ],
            )
            outbox.release(self.engine, untried, now)
            for alert, error in failures:
                log.warning(
                    "alert %d (%s, task %s): delivery %d failed, will retry: %s",
                    alert.id,
                    self.targets.describe(alert.target),
                    alert.document.get("task_id"),
                    alert.attempts + 1,
                    error,
                    extra={
                        "event": "alert_failed",
                        "alert_id": alert.id,
                        "target": alert.target,
                        "task_id": alert.document.get("task_id"),
                        "error": error,
                    },
                )
            round_report.delivered += len(done)
            round_report.failed += len(failures)
            if untried:
                break
        with self._lock:
            self.report.delivered += round_report.delivered
            self.report.failed += round_report.failed
        return round_report

    # -- in a thread of a run -------------------------------------------------------------

    def start(self) -> None:
        """Deliver in the background from now on, beginning with what is already due."""
        if not self.targets.names:
            return
        self._wake.set()
        self._thread = threading.Thread(target=self._loop, name="tickrun-alerts", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New alerts were written (a task became dead): deliver them soon."""
        self._wake.set()

    def stop(self, budget: float = END_BUDGET) -> Report:
        """A last round for what is due, within ``budget`` seconds, then stop."""
        if self._thread is None:
            return self.report
        self._deadline = time.monotonic() + budget
        self._stop.set()
        self._wake.set()
        # A hook that hangs cannot be stopped (it is Python code in a thread): past the
        # budget the run goes on without it, and its claimed alerts go to a later run.
        self._thread.join(budget + self.targets.timeout + 1)
        with self._lock:
            return Report(self.report.delivered, self.report.failed)

    def _loop(self) -> None:
        while True:
            self._wake.wait(POLL)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self.deliver_due(self._deadline if stopping else None)
            except Exception as exc:  # the database failing here is the run's to report
                log.warning(
                    "alert delivery stopped by an error, later runs retry: %s",
                    describe(exc)[0],
                    extra={"event": "alert_error", "error": describe(exc)[0]},
                )
            if stopping:
                return
