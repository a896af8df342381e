"""A task's statuses, an attempt's outcomes, and the one rule for what a failure leads to.

Pure. Who moves a task in and out of each status (every move is a function of ``store``):

- ``pending``: set by enqueue (and by ``dlq retry`` / a released claim); left when a run claims it.
- ``running``: set by a run's claim; left when that run records the outcome, releases the task
  on shutdown, or when a later run reclaims it after its lease expired.
- ``retrying``: set by a run when an attempt failed and attempts remain; left on the next claim
  or by ``cancel``.
- ``succeeded``: set by the run whose handler returned; final (``prune`` deletes it).
- ``dead``: set by a run when attempts ran out or the handler raised ``Fail``; left by
  ``dlq retry`` (back to ``pending``) or ``dlq purge``.
- ``cancelled``: set by ``cancel`` on a pending or retrying task; final.

The values are the strings stored in the database and printed in JSON.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """How one attempt ended, as its history row records it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the handler raised (or raised Fail)
    RETRY = "retry"  # the handler raised Retry
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # the run was stopped before the handler finished
    LOST = "lost"  # the run's lease expired: it died, hung or was cut off


PENDING, RUNNING, RETRYING = Status.PENDING, Status.RUNNING, Status.RETRYING
SUCCEEDED, DEAD, CANCELLED = Status.SUCCEEDED, Status.DEAD, Status.CANCELLED
STATUSES = tuple(Status)
WAITING = (PENDING, RETRYING)
FINISHED = (SUCCEEDED, CANCELLED)
FAILING = tuple(o for o in Outcome if o is not Outcome.SUCCEEDED)


def after_failure(attempt: int, max_attempts: int, *, final: bool = False) -> Status:
    """What a task becomes when attempt number ``attempt`` failed: ``dead`` when it was the
    last one or the failure is ``final`` (``Fail``), else ``retrying``."""
    return DEAD if final or attempt >= max_attempts else RETRYING
