"""Run one command; write its wall time, exit status and peak RSS as JSON to REPORT.

    python -I -S launch.py REPORT DEADLINE_SECONDS COMMAND [ARG...]

Why a launcher: Linux carries a process's peak RSS across ``exec``, and a child forked by the
benchmark (a Python process that has held 20,000 tasks in memory) would report the benchmark's
size, not its own. Spawned from this small process instead, ``ru_maxrss`` is the command's.
Times are CLOCK_MONOTONIC (``time.monotonic``), comparable across processes, so overlapping
runs are timed from the first start to the last exit. Standard library only, so ``-S`` works.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    report, deadline, *cmd = sys.argv[1:]
    started = time.monotonic()
    pid = os.posix_spawn(cmd[0], cmd, os.environ)
    killed = []

    def on_alarm(_signum: int, _frame: object) -> None:
        killed.append(True)
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(float(deadline))))
    _, status, usage = os.wait4(pid, 0)
    ended = time.monotonic()
    signal.alarm(0)
    with open(report, "w") as fh:
        json.dump(
            {
                "started": started,
                "ended": ended,
                "exit_code": os.waitstatus_to_exitcode(status),
                "killed_after_deadline": bool(killed),
                "max_rss_kib": usage.ru_maxrss,  # Linux: KiB
            },
            fh,
        )


if __name__ == "__main__":
    main()
