"""Who may look and who may act: the access token, CSRF tokens, the Host check, and the rule
for which addresses may serve actions without a token. Pure: no web framework.

- With ``TICKRUN_WEB_TOKEN`` set, every page and action needs it: an ``Authorization: Bearer``
  header (scripts, a proxy that injects it) or the session cookie the login form sets, which
  holds a digest of the token, never the token itself.
- Every action is a POST whose form carries a CSRF token: an HMAC, under a secret of this
  process, of a random nonce kept in a SameSite=Strict cookie. A page of another site can
  neither read the nonce nor compute the HMAC, even if it could plant a cookie.
- Only the Host names the dashboard is served as are answered: a page of another site whose
  name was rebound to 127.0.0.1 (DNS rebinding) gets 400, not the queue's payloads.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Collection, Mapping

from tickrun.errors import ConfigError

SESSION_COOKIE = "tickrun_session"
CSRF_COOKIE = "tickrun_csrf"
TOKEN_ENV = "TICKRUN_WEB_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only (a name other than localhost
    could resolve anywhere, so it does not count)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def startup_problem(host: str, *, allow_actions: bool, token: str | None) -> str | None:
    """Why the dashboard must not start (None: it may): actions on an address other hosts can
    reach need a token, or anyone who reaches the port could retry, purge and cancel."""
    if allow_actions and token is None and not is_loopback(host):
        return (
            f"--allow-actions on {host}, which is not a loopback address, needs {TOKEN_ENV}: "
            f"set it (e.g. {TOKEN_ENV}=$(openssl rand -hex 16)) or bind 127.0.0.1"
        )
    return None


def startup_notice(host: str, *, allow_actions: bool, token: str | None) -> str | None:
    """One line saying what an operator may not expect about who can reach what."""
    if token is not None:
        return None
    if not is_loopback(host):
        return (
            f"notice: serving on {host} without {TOKEN_ENV}: anyone who can reach it can read "
            "payloads and errors"
        )
    if allow_actions:
        return (
            f"notice: actions are on without {TOKEN_ENV}: any local user can retry, purge "
            "and cancel tasks"
        )
    return None


def check_token(token: str) -> str:
    """The token as given, or ConfigError for one too short to resist guessing."""
    if len(token) < 16:
        raise ConfigError(f"{TOKEN_ENV} is too short: use at least 16 characters")
    return token


class Guard:
    """The access token (None: open) and this process's CSRF secret."""

    def __init__(self, token: str | None, secret: bytes | None = None) -> None:
        self.token = token
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    # -- access ---------------------------------------------------------------------------

    def session_value(self) -> str:
        """What the session cookie holds: a digest of the token, so the cookie jar never has
        the token itself (it still grants what the token grants, until the token changes)."""
        assert self.token is not None
        return hashlib.sha256(f"tickrun-web-session:{self.token}".encode()).hexdigest()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def allowed(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Whether a request carries the token (always, when there is none)."""
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(given.strip()):
            return True
        cookie = cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie, self.session_value())

    # -- CSRF -----------------------------------------------------------------------------

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.csrf_token(nonce), given)


def host_allowed(host_header: str, allowed: Collection[str] | None) -> bool:
    """Whether a request's Host (name or address, with or without a port) is one the
    dashboard is served as; ``allowed`` None: any."""
    if allowed is None:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host in allowed
