"""Acting on a lease the run can no longer renew, before another run may take the task over.

A run renews its leases every ``lease / 3``. When the database stops answering (a host cut off
from the network, a server that hangs), the renewal blocks and the leases run out while the
handlers go on working; after expiry another host claims the task and both would run it. The
guard is a thread of its own, so it acts even while the run's main thread is stuck in a
database call. Per task, timed from the start of the last claim or renewal that succeeded (so
never later than the expiry the database holds):

* at ``lease - margin`` the lease is *lost*: the handler's ``ctx.lease_lost`` turns true and
  ``ctx.check()`` raises ``LeaseLost``, a child process running it (``timeout=``) is killed,
  the run claims and starts nothing more, and it logs ``lease lost``;
* at ``lease - margin / 2``, if the run has not ended by itself (its main thread is still
  waiting on the database), the ``tickrun`` program exits with code 3: Python cannot stop a
  thread, and a handler that ignores ``ctx`` must not run beside the next claim's. A run
  started from Python (``tickrun.runner.run(app)``) never ends its caller's process; it raises
  ``DatabaseError`` once the database answers or fails.

``margin`` is a fifth of the lease, at most 5 s. Hosts' clocks do not enter into it: the
guard times a lease by this host's monotonic clock from before the claim was sent, and the
database writes and judges the lease by its own clock (tickrun.clock), so the guard's
deadline always comes before the expiry any other host acts on. (SQLite is one host.)

A renewal that finds a claim taken over (another run claimed the task after its lease had
expired: this run was paused, or starved of CPU) tells the handler at once the same way.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping

log = logging.getLogger("tickrun")

MAX_MARGIN = 5.0
EXIT_CODE = 3


def margin(lease: float) -> float:
    """Seconds before expiry at which a lease not renewed is given up."""
    return min(lease / 5, MAX_MARGIN)


class LeaseGuard:
    def __init__(self, exit_process: bool) -> None:
        self._exit_process = exit_process
        self._lock = threading.Lock()
        # task id -> (lease in seconds, monotonic start of the last claim or renewal)
        self._held: dict[int, tuple[float, float]] = {}
        self._lost: set[int] = set()
        self.cut_off = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="tickrun-lease-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def hold(self, leases: Mapping[int, float], since: float) -> None:
        """Tasks (id -> lease) claimed by a statement sent at monotonic ``since``."""
        with self._lock:
            self._held.update((task_id, (lease, since)) for task_id, lease in leases.items())

    def is_lost(self, task_id: int) -> bool:
        """What the task's context reports as ``lease_lost``."""
        return task_id in self._lost  # one set lookup: cheap enough to poll between steps

    def renewed(self, task_ids: Iterable[int], since: float) -> None:
        with self._lock:
            for task_id in task_ids:
                if task_id in self._held and task_id not in self._lost:
                    self._held[task_id] = (self._held[task_id][0], since)

    def taken_over(self, task_ids: Iterable[int]) -> None:
        """A renewal found these claims taken by another run: their handlers are told at once
        (``ctx.lease_lost``, child processes stopped), and they are no longer timed: the
        database answers, so nothing here calls for leaving the process."""
        with self._lock:
            for task_id in task_ids:
                self._held.pop(task_id, None)
                self._lost.add(task_id)

    def release(self, task_ids: Iterable[int]) -> None:
        """The tasks' outcomes are recorded (or they were given back): nothing left to guard."""
        with self._lock:
            for task_id in task_ids:
                self._held.pop(task_id, None)
                self._lost.discard(task_id)

    def _watch(self) -> None:
        while not self._stop.wait(self._check()):
            pass

    def _check(self) -> float:
        """Act on every lease past its deadline; seconds until the next deadline (at most 0.25)."""
        now = time.monotonic()
        newly_lost: list[int] = []
        overdue: list[int] = []
        wait = 0.25
        with self._lock:
            for task_id, (lease, since) in self._held.items():
                lose_at = since + lease - margin(lease)
                exit_at = since + lease - margin(lease) / 2
                if task_id not in self._lost:
                    if now >= lose_at:
                        self._lost.add(task_id)
                        newly_lost.append(task_id)
                    else:
                        wait = min(wait, lose_at - now)
                if task_id in self._lost and self._exit_process:
                    if now >= exit_at:
                        overdue.append(task_id)
                    else:
                        wait = min(wait, exit_at - now)
        if newly_lost:
            self.cut_off.set()
            log.error(
                "lease lost on task(s) %s: the database did not confirm a renewal in time; "
                "their handlers are told (ctx.lease_lost), child processes stopped, and this "
                "run claims nothing more",
                ", ".join(map(str, sorted(newly_lost))),
            )
        if overdue:
            # Python cannot stop a thread: leaving the process is the only way to keep a
            # handler that ignores ctx from running beside another run's claim after expiry.
            sys.stderr.write(
                f"error: lease lost on task(s) {', '.join(map(str, sorted(overdue)))}: the "
                "database still does not answer; exiting before the leases expire\n"
            )
            sys.stderr.flush()
            os._exit(EXIT_CODE)
        return max(wait, 0.01)
