"""``tickrun web``: serve the dashboard (the ``web`` extra). Parse, check, hand over to
tickrun.web; no SQL and no HTML here."""

from __future__ import annotations

import os

import click

from tickrun.cli.base import Context, cli, common, pass_ctx
from tickrun.errors import ConfigError, UsageError

WEB_MODULES = ("starlette", "jinja2", "uvicorn", "python_multipart")


@cli.command()
@click.option(
    "--bind",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; loopback unless told otherwise (:PORT: every interface, "
    "0.0.0.0; port 0: any free port).",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Offer DLQ retry and purge and cancel (POST with a CSRF token). Off a loopback "
    "address this needs TICKRUN_WEB_TOKEN.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests for this Host name (a reverse proxy's). Repeatable.",
)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="URL prefix the dashboard is served under behind a reverse proxy, e.g. /tickrun.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    metavar="N",
    help="Rows per page of a listing.",
)
@common
@pass_ctx
def web(
    ctx: Context,
    bind: str,
    allow_actions: bool,
    allow_hosts: tuple[str, ...],
    root_path: str,
    page_size: int,
) -> None:
    """Serve the dashboard: overview, tasks (stats), due, failures, dead letters (with retry
    and purge), one task's payload, attempts and traceback, schedules and runs. Times are in
    UTC.

    It reads through the same functions as the listing commands, so a page and `tickrun ...
    --json` agree. Read-only unless --allow-actions. With TICKRUN_WEB_TOKEN set, every page
    asks for that token (a sign-in form, or an `Authorization: Bearer` header).
    Needs the web extra: pip install 'tickrun[web]'.

    Example: tickrun web --bind 127.0.0.1:8080 --allow-actions
    """
    import importlib.util

    missing = [m for m in WEB_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"tickrun web needs the web extra ({', '.join(missing)} missing): "
            "pip install 'tickrun[web]'"
        )
    from tickrun.web.app import create_app
    from tickrun.web.security import TOKEN_ENV, check_token, startup_notice, startup_problem
    from tickrun.web.serve import allowed_hosts, listen, parse_bind, run, url_of

    host, port = parse_bind(bind)
    if root_path and (not root_path.startswith("/") or "//" in root_path):
        raise UsageError(f"invalid --root-path {root_path!r}: use a path like /tickrun")
    token = os.environ.get(TOKEN_ENV) or None
    if token is not None:
        check_token(token)
    problem = startup_problem(host, allow_actions=allow_actions, token=token)
    if problem is not None:
        raise ConfigError(problem)
    engine = ctx.engine()
    app = ctx.app(required=False)
    asgi = create_app(
        engine,
        app=app,
        allow_actions=allow_actions,
        token=token,
        allowed_hosts=allowed_hosts(host, allow_hosts),
        page_size=page_size,
    )
    sock = listen(host, port)
    notice = startup_notice(host, allow_actions=allow_actions, token=token)
    if notice is not None:
        click.echo(notice, err=True)
    mode = "actions on" if allow_actions else "read-only"
    if root_path:
        mode += f"; links under {root_path.rstrip('/')}/ for the reverse proxy"
    click.echo(f"tickrun web: serving {url_of(sock)} ({mode}); Ctrl-C stops it")
    run(asgi, sock, root_path=root_path)
