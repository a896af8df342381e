"""What stands in front of every request to the dashboard (static files included): the Host
check, the access token, and the security headers on every response. An ASGI middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickrun.web.security import Guard, host_allowed

# A Content Security Policy that lets the page run only its own script and style: a value
# that slipped past escaping still could not run or load anything.
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class Gate:
    """ASGI middleware: the Host check, the access token and the security headers, before
    and around every request (static files included, so nothing answers a foreign Host)."""

    def __init__(
        self,
        inner: ASGIApp,
        guard: Guard,
        unauthorized: Callable[[Request], Response],
        allowed_hosts: Collection[str] | None,
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.unauthorized = unauthorized  # the sign-in page, with status 401
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + HEADERS
            await send(message)

        request = Request(scope)
        response: Response | None = None
        if not host_allowed(request.headers.get("host", ""), self.allowed_hosts):
            response = Response(
                "error: this dashboard does not answer to that Host (see tickrun web "
                "--allow-host)\n",
                status_code=400,
                media_type="text/plain",
            )
        elif not open_path(scope) and not self.guard.allowed(request.headers, request.cookies):
            response = await run_in_threadpool(self.unauthorized, request)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.inner(scope, receive, send_with_headers)


def route_path(scope: Scope) -> str:
    """The request's path inside the dashboard: without the --root-path prefix, which
    uvicorn puts in front of it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def open_path(scope: Scope) -> bool:
    """Paths that need no token: the login form and the page's own script and style."""
    path = route_path(scope)
    return path == "/login" or path.startswith("/static/")
