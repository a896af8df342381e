"""Opening the database: engines, masked URLs, and the schema-version check."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from tickrun import dialects
from tickrun.errors import ConfigError, DatabaseError, SchemaError
from tickrun.schema import SCHEMA_VERSION, meta


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``; never print a URL any other way."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a non-numeric port
        return "<unparseable database URL>"


def sqlite_path(url: str) -> str | None:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None  # not a file path; open_engine reports the bad URL
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


_engines: dict[str, Engine] = {}

# The short schemes people write (Heroku's and most hosts' DATABASE_URL among them), and the
# drivers that may serve them, preferred first: those of tickrun's extras, then SQLAlchemy's
# defaults (which it would pick itself, and which are rarely installed).
_DRIVERS = {
    "postgres": ("postgresql", ("psycopg", "psycopg2")),
    "postgresql": ("postgresql", ("psycopg", "psycopg2")),
    "mysql": ("mysql", ("pymysql", "mysqldb")),
    "mariadb": ("mariadb", ("pymysql", "mysqldb")),
}
_MODULES = {
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pymysql": "pymysql",
    "mysqldb": "MySQLdb",
}
_EXTRAS = {"postgresql": ("postgres", "psycopg"), "mysql": ("mysql", "pymysql")}


def with_driver(url: str) -> str:
    """``url`` with an installed driver named: ``postgres://`` and ``postgresql://`` become
    ``postgresql+psycopg://`` (psycopg2 if only it is installed), ``mysql://`` and
    ``mariadb://`` become ``mysql+pymysql://`` and ``mariadb+pymysql://``; ``postgres+X://``
    reads as ``postgresql+X://``. Other URLs are returned as they are."""
    scheme, sep, rest = url.partition("://")
    name, plus, driver = scheme.partition("+")
    if not sep or name.lower() not in _DRIVERS:
        return url
    backend, drivers = _DRIVERS[name.lower()]
    if not plus:
        import importlib.util

        installed = [d for d in drivers if importlib.util.find_spec(_MODULES[d]) is not None]
        if not installed:
            return url  # open_engine reports the missing driver, with the extra to install
        driver = installed[0]
    return f"{backend}+{driver}://{rest}"


def open_engine(url: str) -> Engine:
    """One engine per URL per process; configured for durable, lock-safe use."""
    if url in _engines:
        return _engines[url]
    full = with_driver(url)
    try:
        engine = create_engine(full, **dialects.engine_options(full))
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"invalid database URL {mask_url(url)}: {exc}") from None
    except ImportError as exc:
        raise ConfigError(
            f"database driver missing for {mask_url(url)}: {exc} ({_driver_hint(full)})"
        ) from None
    dialects.configure(engine)
    kept = _engines.setdefault(url, engine)  # another thread may have opened it meanwhile
    if kept is not engine:
        engine.dispose()
    return kept


def _driver_hint(url: str) -> str:
    """What to install, and which URL to write, for a driver that is not there."""
    backend = make_url(url).get_backend_name()
    extra, driver = _EXTRAS.get("mysql" if backend == "mariadb" else backend, ("", ""))
    if not extra:
        return "install the database's driver"
    return f"pip install 'tickrun[{extra}]', and write {backend}+{driver}:// or {backend}://"


def close_engines() -> None:
    """Close every pooled connection this process opened, as a program does before it exits:
    servers see a clean goodbye, and SQLite checkpoints and removes its WAL file."""
    for engine in list(_engines.values()):
        engine.dispose()


def ping(engine: Engine) -> None:
    """One round trip to the database (a query on a pooled or new connection); raises when
    it fails."""
    with engine.connect() as conn:
        conn.execute(select(literal(1)))


def check_exists(url: str) -> None:
    """Refuse to create an empty SQLite file as a side effect of a read-only command."""
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        raise SchemaError(f"database file {path} does not exist: run `tickrun init` first")


def schema_version(engine: Engine) -> int | None:
    """The stored schema version, or None when there is no tickrun schema."""
    stmt = select(meta.c.value).where(meta.c.name == "schema_version")
    # A failed connect raises from here, once: a database that does not answer costs one
    # connect timeout, not one per question.
    with engine.connect() as conn:
        try:
            value = conn.execute(stmt).scalar()
        except (OperationalError, ProgrammingError):
            # Checked only on failure: inspecting first would cost every cron tick a query.
            from sqlalchemy import inspect

            conn.rollback()
            if inspect(conn).has_table(meta.name):
                raise
            return None
    return None if value is None else int(value)


def require_schema(engine: Engine) -> None:
    version = schema_version(engine)
    if version is None:
        raise SchemaError("this database has no tickrun schema: run `tickrun init` first")
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"the tickrun schema is version {version}, this tickrun needs {SCHEMA_VERSION}: "
            "run `tickrun init` to upgrade it"
        )
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the tickrun schema is version {version}, newer than this tickrun understands "
            f"({SCHEMA_VERSION}): upgrade tickrun"
        )


def explain_missing_schema(engine: Engine, exc: BaseException) -> None:
    """Raise the SchemaError that says to run ``tickrun init`` when ``exc`` is a statement that
    failed for want of tickrun's tables (``no such table``, ``relation does not exist``,
    ``Table doesn't exist``, a missing column); return otherwise, for the caller to re-raise.

    Called only after a failure, and looks at the schema on a connection of its own (the
    failed one may be in an aborted transaction): statements that succeed pay nothing.
    """
    if not isinstance(exc, OperationalError | ProgrammingError):
        return
    try:
        require_schema(engine)
    except SchemaError as missing:
        raise missing from exc
    except SQLAlchemyError:
        return  # the database itself is the trouble: the original error says more


def describe_db_error(exc: SQLAlchemyError, url: str) -> DatabaseError:
    """A one-line DatabaseError for a driver failure, with any password scrubbed."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    password = make_url(url).password if url else None
    if password:
        text = text.replace(str(password), "***")
    return DatabaseError(f"database error ({mask_url(url)}): {text[:500]}")
