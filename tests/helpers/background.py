"""Processes a test started in the background. The autouse fixtures in tests/conftest.py kill
those still alive when each test ends, so a failed test leaves no blocked ``tickrun run`` or
``tickrun worker`` behind."""

from __future__ import annotations

import subprocess

_background: list[subprocess.Popen[bytes]] = []  # ``tickrun run`` processes
_workers: list[subprocess.Popen[bytes]] = []  # ``tickrun worker`` processes


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    while procs:
        proc = procs.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
