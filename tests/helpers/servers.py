"""HTTP servers of a test: a webhook receiver in the test process, a real ``tickrun web``."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import cli_env

SECRET = "T0001/B0002/s3cr3tT0k3n"


class Receiver:
    """A webhook receiver: a real HTTP server on 127.0.0.1 in a thread of the test.

    ``status`` is what it answers (503: failing); ``drop`` makes it read and record a request,
    then close the connection without answering (an acknowledgement lost on the way); while
    stopped, its port refuses connections (down)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.drop = False
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body.decode(),
                            "status": None if receiver.drop else receiver.status,
                        }
                    )
                if receiver.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = f"/services/{SECRET}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the requests it acknowledged with a 2xx."""
        with self.lock:
            return [
                json.loads(r["body"])
                for r in self.requests
                if r["status"] is not None and 200 <= r["status"] < 300
            ]

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]


class Server:
    """A real ``tickrun web`` process on a free loopback port."""

    def __init__(self, cwd: Path, db: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickrun", "web", "--bind", "127.0.0.1:0", *args],
            cwd=cwd,
            env=cli_env(db, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"serving (http://\S+/)", line)
        if not found:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"tickrun web did not start: {line!r} {err!r}")
        self.url = found.group(1)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err
