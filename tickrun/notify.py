"""Where alerts and pings go, and sending one: a webhook (JSON, or Slack's body), a command
(the alert as JSON on stdin), and Healthchecks-style pings.

The standard library's ``urllib`` is enough here: one POST with a timeout and a few headers,
no sessions or retries (the outbox retries). Credentials in a URL (``user:password@host``)
are sent as HTTP Basic authentication. Every URL printed goes through :func:`mask_url`:
webhook and ping URLs carry their secret in the path (Slack's ``/services/T/B/secret``,
Healthchecks' UUID), so only the scheme and host are shown; a URL that is not valid is shown
as typed but for its password, so the mistake can be seen.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from tickrun.config import resolve_setting
from tickrun.errors import ConfigError, UsageError

WEBHOOK_FORMATS = ("json", "slack")
DEFAULT_TIMEOUT = 5.0  # seconds per delivery or ping: a dead receiver must not stall a run
MAX_ERROR = 500  # characters of a receiver's reply kept as the delivery error


class SendError(Exception):
    """One delivery or ping failed; the message is one line with every URL masked."""


def mask_url(url: str) -> str:
    """``scheme://host[:port]/***``: the path, query and password of a URL are its secrets."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    user = f"{parts.username}:***@" if parts.password else ""
    hidden = "/***" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{user}{host}{hidden}"


def password_masked(url: str) -> str:
    """``url`` as typed but for the password of its ``user:password@`` part (wherever it is:
    the URL may be malformed), for the message about a URL that is not valid: the user must
    see what is wrong with it."""
    return _USERINFO.sub(r"\1:***@", url, count=1)


_USERINFO = re.compile(r"([^/:@?#\s]+):([^/@?#\s]*)@")


def check_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; a UsageError naming ``what``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = password_masked(url)
        raise UsageError(
            f"invalid {what} {shown[:300]!r}: use an http:// or https:// URL with a host"
        )
    return url


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its ``user:password@`` part, and the Basic ``Authorization`` header
    that carries them instead (urllib would take ``user:password@host`` for the host name)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Targets:
    """Where alerts go, as configured; ``hook`` when the application has ``@app.on_dead``."""

    webhook: str | None = None
    format: str = "json"
    command: tuple[str, ...] | None = None
    timeout: float = DEFAULT_TIMEOUT
    hook: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The targets an alert row is written for, one row each."""
        found = []
        if self.webhook:
            found.append("webhook")
        if self.command:
            found.append("command")
        if self.hook:
            found.append("hook")
        return tuple(found)

    def describe(self, target: str) -> str:
        """The target as printed: its URL masked, its command's program."""
        if target == "webhook" and self.webhook:
            return f"webhook {mask_url(self.webhook)} ({self.format})"
        if target == "command" and self.command:
            return f"command {self.command[0]}"
        return target


def resolve_targets(app_values: Mapping[str, Any], *, hook: bool = False) -> Targets:
    """Alert targets from ``TICKRUN_ALERT_*`` > ``[tool.tickrun] alert_*`` > ``App(alert_*=)``;
    a ConfigError (one line, exit 2) for an invalid URL, format, command or timeout, naming
    where the value came from."""

    def setting(name: str) -> tuple[Any, str]:
        found = resolve_setting(
            None, f"TICKRUN_{name.upper()}", name, allow=(str, int, float, list)
        )
        if found is not None:
            source = found.source.removeprefix("environment variable ")
            return found.value, source if source != "pyproject.toml" else f"{name} in {source}"
        return app_values.get(name), f"App({name}=...)"

    webhook, webhook_from = setting("alert_webhook")
    fmt, fmt_from = setting("alert_format")
    command, command_from = setting("alert_command")
    timeout, timeout_from = setting("alert_timeout")
    if webhook:
        try:
            check_url(str(webhook), f"alert webhook URL ({webhook_from})")
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
    fmt = fmt or "json"
    if fmt not in WEBHOOK_FORMATS:
        raise ConfigError(
            f"invalid alert format {fmt!r} ({fmt_from}): use one of {', '.join(WEBHOOK_FORMATS)}"
        )
    argv = _command(command, command_from) if command else None
    return Targets(
        webhook=str(webhook) if webhook else None,
        format=str(fmt),
        command=argv,
        timeout=_timeout(timeout, timeout_from),
        hook=hook,
    )


def _command(value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"invalid alert command ({source}): {exc}") from None
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        argv = list(value)
    else:
        raise ConfigError(f"alert command ({source}) must be a string or a list of strings")
    if not argv:
        raise ConfigError(f"alert command ({source}) is empty")
    # Checked at start, so a typo is a one-line error now rather than failed deliveries later.
    if shutil.which(argv[0]) is None:
        raise ConfigError(f"alert command {argv[0]!r} ({source}) not found (or not executable)")
    return tuple(argv)


MAX_TIMEOUT = 300.0


def _timeout(value: Any, source: str) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        from tickrun.durations import parse_duration

        try:
            seconds = parse_duration(value)
        except UsageError as exc:
            raise ConfigError(f"invalid alert timeout ({source}): {exc}") from None
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ConfigError(
            f"invalid alert timeout {value!r} ({source}): it must be longer than 0s and at "
            f"most {MAX_TIMEOUT:g}s (5m)"
        )
    return seconds


# -- documents ------------------------------------------------------------------------------


def dead_document(
    *,
    task_id: int,
    task: str,
    queue: str,
    attempts: int,
    max_attempts: int,
    key: str | None,
    error: str | None,
    dead_at: str,
) -> dict[str, Any]:
    """The alert for a task that became dead: what a receiver shows a person."""
    return {
        "event": "task.dead",
        "task_id": task_id,
        "task": task,
        "queue": queue,
        "attempts": attempts,
        "max_attempts": max_attempts,
        "key": key,
        "last_error": error,
        "dead_at": dead_at,
        "hint": f"tickrun show {task_id}",
    }


def check_document(problems: Sequence[str], summary: str, checked_at: str) -> dict[str, Any]:
    """The alert for ``tickrun check --alert`` finding problems."""
    return {
        "event": "check.failed",
        "problems": list(problems),
        "summary": summary,
        "checked_at": checked_at,
        "hint": "tickrun check",
    }


def summary(doc: Mapping[str, Any]) -> str:
    """One line of text for a person (Slack, mail subjects)."""
    if doc.get("event") == "check.failed":
        problems = [str(p) for p in doc.get("problems") or []]
        shown = "; ".join(p[:200] for p in problems[:5]) + ("; …" if len(problems) > 5 else "")
        return f"tickrun check found {len(problems)} problem(s): {shown}"
    error = str(doc.get("last_error") or "no error recorded").splitlines()
    first = error[0][:300] if error else ""
    return (
        f"tickrun: task {doc.get('task_id')} {doc.get('task')} is dead after "
        f"{doc.get('attempts')}/{doc.get('max_attempts')} attempts: {first} "
        f"(see `{doc.get('hint')}`)"
    )


def webhook_body(doc: Mapping[str, Any], fmt: str) -> bytes:
    """The POST body: the document itself, or the ``{"text": ...}`` that Slack's and
    Mattermost's incoming webhooks accept (the full document rides along as an attachment
    field Slack ignores and Mattermost shows under "props")."""
    if fmt == "slack":
        return json.dumps({"text": summary(doc)}).encode()
    return json.dumps(doc).encode()


# -- sending --------------------------------------------------------------------------------


def post(
    url: str,
    body: bytes,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    """POST ``body``; SendError unless the receiver answers 2xx within ``timeout``."""
    import urllib.error
    import urllib.request

    target, auth = split_credentials(url)
    request = urllib.request.Request(
        target,
        data=body,
        method="POST",
        headers={
            "Content-Type": content_type,
            "User-Agent": "tickrun",
            **auth,
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(65536)
    except urllib.error.HTTPError as exc:
        reply = _scrub(exc.read(MAX_ERROR).decode("utf-8", "replace"), url)
        raise SendError(f"{mask_url(url)} answered HTTP {exc.code}: {reply}".strip()) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, resets are OSErrors
        reason = getattr(exc, "reason", exc)
        text = _scrub(" ".join(str(reason).split()) or type(exc).__name__, url)
        raise SendError(f"{mask_url(url)} unreachable: {text}") from None


def _scrub(text: str, url: str) -> str:
    """A receiver's text with the URL's secret parts removed, on one bounded line."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.password):
        if secret and secret.strip("/"):
            text = text.replace(secret, "***")
    return " ".join(text.split())[:MAX_ERROR]


def run_command(argv: Sequence[str], stdin: bytes, *, timeout: float) -> None:
    """Run ``argv`` with ``stdin``; SendError unless it exits 0 within ``timeout``."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "TICKRUN_ALERT": "1"},
        )
    except subprocess.TimeoutExpired:
        raise SendError(f"command {argv[0]} ran over {timeout:g}s and was killed") from None
    except OSError as exc:
        raise SendError(f"command {argv[0]} could not start: {exc}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.decode("utf-8", "replace").split())[-MAX_ERROR:]
        raise SendError(f"command {argv[0]} exited {done.returncode}: {tail}".strip())


def ping(url: str, suffix: str, body: str, *, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """A Healthchecks-style ping of ``url + suffix``; the warning to print if it failed."""
    target = url.rstrip("/") + suffix if suffix else url
    try:
        post(target, body.encode(), timeout=timeout, content_type="text/plain; charset=utf-8")
    except SendError as exc:
        return f"ping failed: {exc}"
    return None
