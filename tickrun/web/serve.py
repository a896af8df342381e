"""Serving the dashboard: where it listens, what it refuses, and uvicorn.

The socket is bound here, before uvicorn starts, so a taken port or a bad address is one
``error:`` line with exit code 2 instead of a server log and a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Collection, Iterator

import uvicorn

from tickrun.errors import ConfigError, UsageError
from tickrun.web.security import LOOPBACK_NAMES, is_wildcard

DEFAULT_BIND = "127.0.0.1:8080"
_STOP = (signal.SIGINT, signal.SIGTERM)


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``PORT`` (on 127.0.0.1) or ``:PORT`` (on every
    interface, as ``0.0.0.0``, the address it is then named by) -> (host, port).

    >>> parse_bind("0.0.0.0:9000"), parse_bind("[::1]:8080"), parse_bind("8081")
    (('0.0.0.0', 9000), ('::1', 8080), ('127.0.0.1', 8081))
    >>> parse_bind(":8081")
    ('0.0.0.0', 8081)
    """
    raw = text.strip()
    if raw.startswith("["):
        host, sep, port = raw[1:].partition("]:")
        if not sep:
            raise UsageError(f"invalid --bind {text!r}: use [IPv6]:PORT, e.g. [::1]:8080")
    elif ":" in raw:
        host, _, port = raw.rpartition(":")
        host = host or "0.0.0.0"  # noqa: S104 - asked for: ":PORT" is every interface
    else:
        host, port = "127.0.0.1", raw
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"invalid --bind {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    if ":" in host and not raw.startswith("["):
        raise UsageError(f"invalid --bind {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    return host, int(port)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or ConfigError saying why
    not."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str, extra: Collection[str]) -> set[str] | None:
    """The Host names to answer: loopback names, the bound address, and ``--allow-host``
    names; None (any) on a wildcard address with no name given, where the machine's own
    addresses are not known here."""
    if is_wildcard(host) and not extra:
        return None
    names = {*LOOPBACK_NAMES, *(h.lower() for h in extra)}
    if not is_wildcard(host):
        names.add(host.lower())
    return names


def url_of(sock: socket.socket) -> str:
    """Where the dashboard answers directly (behind a proxy with --root-path, the proxy strips
    that prefix before forwarding, so this address stays the same)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the stopping signal once it has shut down: SIGTERM
    or Ctrl-C is how this command is meant to stop, so it then exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def run(
    asgi: Callable[..., object],
    sock: socket.socket,
    *,
    root_path: str = "",
    forwarded_allow_ips: str = "127.0.0.1",
) -> None:
    """Serve ``asgi`` on ``sock`` until SIGINT or SIGTERM (uvicorn finishes open requests)."""
    config = uvicorn.Config(
        asgi,
        log_level="warning",
        root_path=root_path.rstrip("/"),
        # X-Forwarded-Proto/For are believed from these addresses only: a reverse proxy on
        # the same host, by default, so cookies get their Secure flag behind TLS.
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
    )
    _Server(config).run(sockets=[sock])
