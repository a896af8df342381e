"""What every command shares: the click group, --db/--app/--debug, output formats, errors."""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from tickrun import __version__
from tickrun.errors import ConfigError, TickrunError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tickrun.app import App
    from tickrun.config import Setting


class Context:
    """What every command resolves: database, application, and how to report."""

    def __init__(self) -> None:
        self.db_flag: str | None = None
        self.app_flag: str | None = None
        self.debug = bool(os.environ.get("TICKRUN_DEBUG"))
        self._app: App | None = None
        self.url = ""

    def app_setting(self) -> Setting | None:
        """Which application, and where that comes from (None: no application configured)."""
        from tickrun.config import resolve_app_ref

        return resolve_app_ref(self.app_flag)

    def app(self, required: bool = True) -> App | None:
        if self._app is None:
            from tickrun.loader import load_app

            ref = self.app_setting()
            if ref is None:
                if required:
                    raise ConfigError(
                        "no application: pass --app MODULE:ATTR, set TICKRUN_APP, or set app "
                        "in [tool.tickrun] of pyproject.toml"
                    )
                return None
            self._app = load_app(ref.value)
        return self._app

    def database_setting(self) -> Setting:
        """Which database URL, and where that comes from; the application's own database_url
        (which means loading it) only when nothing else sets one."""
        from tickrun.config import resolve_database_url

        setting = resolve_database_url(self.db_flag)
        if setting.source == "default" and self.app_setting() is not None:
            app = self.app(required=False)
            setting = resolve_database_url(self.db_flag, app.database_url if app else None)
        return setting

    def engine(self, *, schema: bool = True, create: bool = False) -> Engine:
        from tickrun.database import check_exists, open_engine, require_schema

        # A configured application that cannot be imported is an error for every command,
        # not only for those that need it: a typo must not pass unnoticed behind a table.
        self.app(required=False)
        setting = self.database_setting()
        self.url = setting.value
        if not create:
            check_exists(self.url)
        engine = open_engine(self.url)
        if schema:
            require_schema(engine)
        if self._app is not None:
            self._app.use_database(self.url)
        return engine

    def check_task_name(self, engine: Engine, name: str | None, *, stored: bool = True) -> None:
        """A ``--task`` filter: with an application loaded, a name it does not register is an
        error naming those it does (a typo would otherwise match nothing, silently), unless
        ``stored`` and tasks of that name are in the database (a handler since removed)."""
        app = self.app(required=False)
        if name is None or app is None or name in app.tasks:
            return
        if stored:
            from tickrun.listings import has_tasks

            if has_tasks(engine, name):
                return
        app.spec(name)  # raises UnknownTask with the registered names


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def _set_flag(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            setattr(ctx.ensure_object(Context), attr, value)
        return value

    return callback


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--db``, ``--app`` and ``--debug``, accepted before and after the command name."""
    fn = click.option(
        "--db",
        "db",
        metavar="URL",
        expose_value=False,
        is_eager=True,
        callback=_set_flag("db_flag"),
        help="Database URL (env TICKRUN_DATABASE_URL).",
    )(fn)
    fn = click.option(
        "--app",
        "app_ref",
        metavar="MODULE:ATTR",
        expose_value=False,
        is_eager=True,
        callback=_set_flag("app_flag"),
        help="Application to load (env TICKRUN_APP).",
    )(fn)
    fn = click.option(
        "--debug",
        is_flag=True,
        default=None,
        expose_value=False,
        callback=_set_flag("debug"),
        help="Show tracebacks of errors.",
    )(fn)
    return fn


def formats(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|json|csv`` and ``--json``, resolved into one ``fmt`` argument."""
    from tickrun.output import FORMATS

    @functools.wraps(fn)
    def wrapper(*args: Any, fmt: str, as_json: bool, **kwargs: Any) -> Any:
        return fn(*args, fmt="json" if as_json else fmt, **kwargs)

    wrapper = click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")(
        wrapper
    )
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(wrapper)


def utf8(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A callback for strings that reach the database (a name, key, queue, worker): text,
    not bytes that are not UTF-8, which Python keeps as lone surrogates and the drivers fail
    on mid-statement. Takes one value or a tuple (``multiple=True``)."""
    from tickrun.flow import is_text

    for text in value if isinstance(value, tuple) else (value,):
        if isinstance(text, str) and not is_text(text):
            # As typed: b"k\xff" shows as 'k\xff', not as Python's 'k\udcff'.
            typed = repr(text.encode("utf-8", "surrogateescape"))[1:]
            raise click.BadParameter(f"{typed} is not valid UTF-8", ctx, param)
    return value


def table_width() -> int | None:
    """How wide tables may be: ``COLUMNS`` when set, else the terminal's width when stdout is
    one; None (never shorten anything) when the output goes to a file, a pipe or a program."""
    import shutil

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def given_as(ctx: click.Context, name: str) -> str:
    """How parameter ``name`` was given, for a message about its value: its environment
    variable when the value came from there (the user typed no flag), else its flag."""
    from click.core import ParameterSource

    param = next(p for p in ctx.command.params if p.name == name)
    envvar = getattr(param, "envvar", None)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT and envvar:
        return envvar if isinstance(envvar, str) else envvar[0]
    return param.opts[0]


def choice(*choices: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback for an option with an environment variable: one of ``choices`` (any case),
    or an error that blames the variable when the value came from it, not the flag."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or str(value).lower() in choices:
            return None if value is None else str(value).lower()
        where = given_as(ctx, param.name or "")
        raise UsageError(f"invalid {where} {value!r}: use one of {', '.join(choices)}")

    return callback


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from tickrun.durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tickrun")
@common
def cli() -> None:
    """tickrun: a durable background-job queue in your database, driven by cron.

    \b
    Put one line in cron:  * * * * *  tickrun run --max-time 50s
    Example:               tickrun --app myapp.jobs:app run
    """


def main(argv: list[str] | None = None) -> None:
    """Run one command: errors are one line on stderr, with the contract's exit code."""
    sys.exit(_invoke(argv))


def console() -> None:
    """The ``tickrun`` program: :func:`main`, then a quick exit."""
    try:
        code = _invoke(None)
    finally:
        database = sys.modules.get("tickrun.database")  # not imported: nothing was opened
        if database is not None:
            database.close_engines()
    # Objects frozen out of the collector's reach spare the interpreter's shutdown its full
    # passes over the heap: about 40 ms of every cron tick with SQLAlchemy and psycopg loaded
    # (bench W5). Connections were closed above, so nothing is left for the collector to do.
    gc.freeze()
    sys.exit(code)


def _invoke(argv: list[str] | None) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    ctx_obj = Context()
    try:
        result = cli.main(args=argv, prog_name="tickrun", standalone_mode=False, obj=ctx_obj)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Abort:
        code = _fail("aborted", 130, ctx_obj)
    except click.ClickException as exc:
        code = _fail(exc.format_message(), 2, ctx_obj)
    except TickrunError as exc:
        code = _fail(str(exc), exc.exit_code, ctx_obj)
    except SQLAlchemyError as exc:
        from tickrun.database import describe_db_error

        err = describe_db_error(exc, ctx_obj.url)
        code = _fail(str(err), err.exit_code, ctx_obj)
    return code


def _fail(message: str, code: int, ctx: Context) -> int:
    if ctx.debug:
        import traceback

        traceback.print_exc()
    click.echo(f"error: {' '.join(message.split())}", err=True)
    return code
