"""A user-facing status endpoint: what a web app shows while tickrun works for its user.

    python status_endpoint.py                  # serve GET /status/<key> on 127.0.0.1:8000
    python status_endpoint.py --print KEY      # print the JSON that GET /status/KEY returns

Each request is one ``app.status(key=...)``: one query on the unique index of the key, cheap
enough for a page that polls every second. Standard library only; the handler is the same few
lines in Flask, Django or FastAPI.
"""

from __future__ import annotations

import contextlib
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from jobs import app


def status_body(key: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for the task enqueued with ``key``."""
    status = app.status(key=key)
    if status is None:
        return 404, {"error": f"no task with key {key!r} (not enqueued yet, or pruned)"}
    return 200, status.as_json()


class StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        prefix = "/status/"
        if not self.path.startswith(prefix):
            code, body = 404, {"error": "try /status/<key>"}
        else:
            code, body = status_body(self.path.removeprefix(prefix))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--print"] and len(argv) == 2:
        code, body = status_body(argv[1])
        print(f"HTTP {code}")
        print(json.dumps(body, indent=2))
        return 0
    server = HTTPServer(("127.0.0.1", 8000), StatusHandler)  # loopback only: a demo
    print("serving http://127.0.0.1:8000/status/<key> (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
