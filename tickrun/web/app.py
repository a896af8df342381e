"""The dashboard: a Starlette application rendering Jinja2 templates (auto-escaping on).

Every page reads through the functions the CLI's listings call (tickrun.listings,
tickrun.activity, tickrun.scheduler) and every action through tickrun.maintenance, so a page
and ``tickrun ... --json`` never disagree; there is no SQL here. Each read is a short
transaction of its own, so a page never holds back runs draining the same database.

Reads are plain ``def`` endpoints, which Starlette runs in its thread pool: the database
drivers block, and the event loop must keep answering other requests meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from tickrun import activity, clock, listings, maintenance
from tickrun.database import describe_db_error
from tickrun.durations import format_duration, parse_duration
from tickrun.errors import NotFound, TickrunError, UsageError
from tickrun.lifecycle import DEAD, WAITING
from tickrun.web import present
from tickrun.web.gate import Gate, route_path
from tickrun.web.security import CSRF_COOKIE, SESSION_COOKIE, TOKEN_ENV, Guard

if TYPE_CHECKING:
    from tickrun.app import App

log = logging.getLogger("tickrun.web")

NOTICE_COOKIE = "tickrun_notice"
# Windows the overview's charts offer: (query value, seconds, bars).
WINDOWS = {"1h": (3600, 30), "6h": (6 * 3600, 36), "24h": (86400, 48), "7d": (7 * 86400, 56)}
FAILURE_WINDOW = "24h"
STATS_WINDOW_TEXT = "1h"  # the tasks page: `tickrun stats --since 1h`
NAV = [
    ("overview", "/", "Overview"),
    ("stats", "/stats", "Tasks"),
    ("due", "/due", "Due"),
    ("failures", "/failures", "Failures"),
    ("dlq", "/dlq", "Dead letters"),
    ("schedules", "/schedules", "Schedules"),
    ("runs", "/runs", "Runs"),
]


class Dashboard:
    """The pages and actions over one database (and the application, for its schedules)."""

    def __init__(
        self,
        engine: Engine,
        *,
        app: App | None,
        allow_actions: bool,
        guard: Guard,
        page_size: int,
    ) -> None:
        self.engine = engine
        self.app = app
        self.allow_actions = allow_actions
        self.guard = guard
        self.page_size = page_size
        env = Environment(
            loader=PackageLoader("tickrun.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            utc=present.utc,
            iso=present.iso,
            pretty=present.pretty_json,
            secs=present.seconds,
            span=present.span,
        )
        env.tests["datetime"] = lambda value: isinstance(value, datetime)
        self.templates = Jinja2Templates(env=env)

    # -- plumbing -------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        now: datetime | None = None,
    ) -> Response:
        now = now or clock.now()
        nonce = request.cookies.get(CSRF_COOKIE) or self.guard.new_nonce()
        notice = unquote(request.cookies.get(NOTICE_COOKIE, ""))[:500]
        base = request.scope.get("root_path", "").rstrip("/")
        full = {
            "base": base,
            "now": now,
            "nav": NAV,
            "allow_actions": self.allow_actions,
            "csrf": self.guard.csrf_token(nonce),
            "notice": notice,
            "ago": lambda value: present.relative(now, value),
            # Where an action sends the browser back to: this page, its filters included, as
            # a path inside the dashboard (redirects add the root path again).
            "path": route_path(request.scope)
            + (f"?{request.url.query}" if request.url.query else ""),
            "logged_in": self.guard.token is not None and SESSION_COOKIE in request.cookies,
            **context,
        }
        response = self.templates.TemplateResponse(request, name, full, status_code=status)
        secure = request.url.scheme == "https"
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=secure, path="/"
            )
        if notice:
            response.delete_cookie(NOTICE_COOKIE, path="/")
        return response

    def page(self, request: Request) -> present.Page:
        number = _int_arg(request, "page", 1, low=1)
        size = _int_arg(request, "per", self.page_size, low=1, high=present.MAX_PAGE_SIZE)
        return present.Page(number, size)

    # -- pages ----------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        window_name = request.query_params.get("window", "24h")
        if window_name not in WINDOWS:
            raise HTTPException(400, f"unknown window {window_name!r}: use {', '.join(WINDOWS)}")
        window, bars = WINDOWS[window_name]
        now = clock.now()
        per_queue = activity.queues(self.engine, now)
        ages = [q["oldest_due_age_s"] for q in per_queue if q["oldest_due_age_s"] is not None]
        buckets = activity.throughput(self.engine, now, window=window, buckets=bars)
        last_runs = activity.recent_runs(self.engine, now, limit=1)
        context = {
            "title": "Overview",
            "active": "overview",
            "totals": activity.status_counts(self.engine),
            "due_now": sum(q["due"] for q in per_queue),
            "oldest_due_age_s": max(ages) if ages else None,
            "queues": per_queue,
            "queue_fields": present.columns(per_queue, activity.QUEUE_FIELDS),
            "runs_last_hour": activity.count_runs(self.engine, now, since=3600),
            "last_run": last_runs[0] if last_runs else None,
            "window": window_name,
            "windows": list(WINDOWS),
            "ok_chart": present.bar_chart(buckets, "succeeded"),
            "failed_chart": present.bar_chart(buckets, "failed"),
            "failures": listings.failures(self.engine, now, since=window, limit=10),
        }
        return self.render(request, "overview.html", context, now=now)

    def due(self, request: Request) -> Response:
        task, queue = _filters(request)
        page = self.page(request)
        now = clock.now()
        rows = listings.due(
            self.engine, now, queue=queue, task=task, limit=page.fetch, offset=page.offset
        )
        context = {"title": "Due now", "task": task, "queue": queue, "cancellable": WAITING}
        return self._listing(request, "due", rows, listings.DUE_FIELDS, page, now, context)

    def failures(self, request: Request) -> Response:
        task, queue = _filters(request)
        since = _duration_arg(request, "since", FAILURE_WINDOW)
        page = self.page(request)
        now = clock.now()
        rows = listings.failures(
            self.engine, now, since=since, task=task, queue=queue, limit=page.fetch,
            offset=page.offset,
        )  # fmt: skip
        context = {"title": "Failures", "task": task, "queue": queue}
        context["since"] = format_duration(since)
        return self._listing(request, "failures", rows, listings.FAILURE_FIELDS, page, now, context)

    def dlq(self, request: Request) -> Response:
        task, queue = _filters(request)
        page = self.page(request)
        now = clock.now()
        rows = listings.dead(
            self.engine, task=task, queue=queue, limit=page.fetch, offset=page.offset
        )
        context = {"title": "Dead-letter queue", "task": task, "queue": queue}
        return self._listing(request, "dlq", rows, listings.DLQ_FIELDS, page, now, context)

    def _listing(
        self,
        request: Request,
        name: str,
        rows: list[dict[str, Any]],
        known: list[str],
        page: present.Page,
        now: datetime,
        context: dict[str, Any],
    ) -> Response:
        """One page of a listing (template and nav entry ``name``): its rows, their columns,
        the filters as given (empty: none) and the links to the pages around it."""
        shown, more = page.cut(rows)
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        full = {
            "active": name,
            "rows": shown,
            "fields": present.columns(shown, known),
            "page": page,
            "more": more,
            "prev_url": _with_page(request.url.path, query, page.number - 1),
            "next_url": _with_page(request.url.path, query, page.number + 1),
            **context,
            "task": context.get("task") or "",
            "queue": context.get("queue") or "",
        }
        return self.render(request, f"{name}.html", full, now=now)

    def task(self, request: Request) -> Response:
        raw = request.path_params["task_id"]
        try:
            task_id = int(raw)
        except ValueError:
            raise HTTPException(404, f"no task with id {raw!r}") from None
        detail = listings.show(self.engine, task_id)
        fields = {
            k: v
            for k, v in detail.fields.items()
            if k not in ("payload", "last_traceback", "result")
        }
        history = detail.history
        hidden = {"traceback"}
        history_fields = [
            f
            for f in present.columns(history, [*listings.HISTORY_FIELDS, "duration_s"])
            if f not in hidden
        ]
        context = {
            "title": f"Task {task_id}",
            "active": "",
            "task": detail.fields,
            "fields": fields,
            "has_result": "result" in detail.fields,
            "history": history,
            "history_fields": history_fields,
            "last_failure": detail.last_failure,
            "retryable": detail.fields["status"] == DEAD,
            "cancellable": detail.fields["status"] in WAITING,
        }
        return self.render(request, "task.html", context)

    def stats(self, request: Request) -> Response:
        since = _duration_arg(request, "since", STATS_WINDOW_TEXT)
        now = clock.now()
        rows = listings.stats(self.engine, now, since=since)
        context = {
            "title": "Tasks",
            "active": "stats",
            "rows": rows,
            "fields": present.columns(rows, listings.STATS_FIELDS + listings.STATS_WINDOW_FIELDS),
            "since": format_duration(since),
        }
        return self.render(request, "stats.html", context, now=now)

    def schedules(self, request: Request) -> Response:
        from tickrun.scheduler import schedule_rows

        now = clock.now()
        rows = schedule_rows(self.app, self.engine, now) if self.app is not None else []
        context = {
            "title": "Schedules",
            "active": "schedules",
            "has_app": self.app is not None,
            "rows": rows,
            "fields": present.columns(rows, ()),
        }
        return self.render(request, "schedules.html", context, now=now)

    def runs(self, request: Request) -> Response:
        page = self.page(request)
        now = clock.now()
        rows = activity.recent_runs(self.engine, now, limit=page.fetch, offset=page.offset)
        context = {"title": "Runs"}
        return self._listing(request, "runs", rows, activity.RUNS_FIELDS, page, now, context)

    # -- login ----------------------------------------------------------------------------

    def login_form(self, request: Request) -> Response:
        return self.render(
            request, "login.html", {"title": "Sign in", "active": "", "wrong": False}
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        given = str(form.get("token", ""))
        if self.guard.token is None:
            return _redirect(request, "/")
        if not self.guard.token_matches(given):
            context = {"title": "Sign in", "active": "", "wrong": True}
            return self.render(request, "login.html", context, status=401)
        response = _redirect(request, _local(str(form.get("next", "/"))))
        response.set_cookie(
            SESSION_COOKIE,
            self.guard.session_value(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self._form(request, action=False)
        response = _redirect(request, "/login")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- actions --------------------------------------------------------------------------

    async def _form(self, request: Request, *, action: bool = True) -> FormData:
        """The form of an action, once its CSRF token checks out (and actions are on)."""
        if action and not self.allow_actions:
            raise HTTPException(403, "actions are off: start tickrun web with --allow-actions")
        form = await request.form()
        given = form.get("csrf")
        if not self.guard.csrf_ok(
            request.cookies.get(CSRF_COOKIE), given if isinstance(given, str) else None
        ):
            raise HTTPException(403, "missing or stale CSRF token: reload the page and try again")
        return form

    async def retry(self, request: Request) -> Response:
        form = await self._form(request)
        ids = _ids(form)
        task = _text(form, "task")
        if not ids and form.get("all") != "1":
            raise HTTPException(400, "give the ids of the dead tasks to retry, or all")
        moved = await run_in_threadpool(
            maintenance.retry_dead, self.engine, clock.now(), ids=ids or None, task=task
        )
        text = f"retried {_tasks(len(moved.ids), 'dead')}: back to pending, due now"
        return _done(request, form, text + _listed(moved.ids) + _skipped(moved.skipped))

    async def purge(self, request: Request) -> Response:
        form = await self._form(request)
        task = _text(form, "task")
        older = _text(form, "older_than")
        try:
            older_than = parse_duration(older) if older else None
        except UsageError as exc:
            raise HTTPException(400, str(exc)) from None
        moved = await run_in_threadpool(
            maintenance.purge_dead, self.engine, clock.now(), older_than=older_than, task=task
        )
        return _done(request, form, f"purged {_tasks(len(moved.ids), 'dead')}{_listed(moved.ids)}")

    async def cancel(self, request: Request) -> Response:
        form = await self._form(request)
        ids = _ids(form)
        if not ids:
            raise HTTPException(400, "give the ids of the tasks to cancel")
        moved = await run_in_threadpool(maintenance.cancel, self.engine, clock.now(), ids)
        text = f"cancelled {_tasks(len(moved.ids), '')}"
        return _done(request, form, text + _listed(moved.ids) + _skipped(moved.skipped))

    # -- errors ---------------------------------------------------------------------------

    def error(self, request: Request, status: int, message: str) -> Response:
        context = {"title": f"{status}", "active": "", "status": status, "message": message}
        if status == 401:
            context.update({"title": "Sign in", "wrong": False})
            return self.render(request, "login.html", context, status=401)
        return self.render(request, "error.html", context, status=status)


def _int_arg(
    request: Request, name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HTTPException(400, f"{name} must be {bound}, not {value}")
    return value


def _duration_arg(request: Request, name: str, default: str) -> float:
    try:
        return parse_duration(request.query_params.get(name) or default)
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from None


def _filters(request: Request) -> tuple[str | None, str | None]:
    """The task and queue a listing is narrowed to (an empty field: no filter)."""
    task = request.query_params.get("task", "").strip() or None
    queue = request.query_params.get("queue", "").strip() or None
    return task, queue


def _with_page(path: str, query: dict[str, str], number: int) -> str:
    return f"{path}?{urlencode({**query, 'page': number})}"


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _ids(form: FormData) -> list[int]:
    out = []
    for raw in form.getlist("id"):
        if not isinstance(raw, str) or not raw.strip().isdigit():
            raise HTTPException(400, f"task ids are whole numbers, not {str(raw)[:40]!r}")
        out.append(int(raw))
    return out


def _tasks(n: int, what: str) -> str:
    noun = f"{what} task" if what else "task"
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _listed(ids: list[int], shown: int = 20) -> str:
    if not ids:
        return ""
    more = f" … ({len(ids) - shown} more)" if len(ids) > shown else ""
    return " (" + ", ".join(str(i) for i in ids[:shown]) + more + ")"


def _skipped(skipped: dict[int, str]) -> str:
    if not skipped:
        return ""
    return "; left alone: " + ", ".join(f"{i} is {s}" for i, s in sorted(skipped.items()))


def _local(target: str) -> str:
    """A path on this dashboard to go back to; anything else (another site) is the overview."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _redirect(request: Request, path: str) -> RedirectResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(base + path, status_code=303)


def _done(request: Request, form: FormData, notice: str) -> Response:
    """Back to the page the action came from, carrying what it did (Post/Redirect/Get)."""
    nxt = form.get("next")
    response = _redirect(request, _local(nxt if isinstance(nxt, str) else "/"))
    response.set_cookie(
        NOTICE_COOKIE, quote(notice[:500]), httponly=True, samesite="strict", path="/"
    )
    return response


def create_app(
    engine: Engine,
    *,
    app: App | None = None,
    allow_actions: bool = False,
    token: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    page_size: int = present.PAGE_SIZE,
    guard: Guard | None = None,
) -> ASGIApp:
    """The dashboard over ``engine`` as an ASGI application (``tickrun web`` serves it with
    uvicorn; any ASGI server can). ``allowed_hosts`` None answers any Host."""
    dash = Dashboard(
        engine,
        app=app,
        allow_actions=allow_actions,
        guard=guard or Guard(token),
        page_size=page_size,
    )

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return dash.error(request, exc.status_code, exc.detail)

    def tickrun_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TickrunError)
        return dash.error(request, 404 if isinstance(exc, NotFound) else 400, str(exc))

    def db_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SQLAlchemyError)
        err = describe_db_error(exc, engine.url.render_as_string(hide_password=False))
        log.warning("database error: %s", err)
        return dash.error(request, 503, str(err))

    routes = [
        Route("/", dash.overview, name="overview"),
        Route("/due", dash.due),
        Route("/failures", dash.failures),
        Route("/dlq", dash.dlq),
        Route("/tasks/{task_id}", dash.task),
        Route("/stats", dash.stats),
        Route("/schedules", dash.schedules),
        Route("/runs", dash.runs),
        Route("/login", dash.login_form, methods=["GET"]),
        Route("/login", dash.login, methods=["POST"]),
        Route("/logout", dash.logout, methods=["POST"]),
        Route("/dlq/retry", dash.retry, methods=["POST"]),
        Route("/dlq/purge", dash.purge, methods=["POST"]),
        Route("/cancel", dash.cancel, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("tickrun.web", "static")]), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = {
        HTTPException: http_error,
        TickrunError: tickrun_error,
        SQLAlchemyError: db_error,
    }
    starlette = Starlette(routes=routes, exception_handlers=handlers)

    def unauthorized(request: Request) -> Response:
        message = f"sign in: this dashboard needs its token ({TOKEN_ENV})"
        return dash.error(request, 401, message)

    return Gate(starlette, dash.guard, unauthorized, allowed_hosts)
