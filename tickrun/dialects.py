"""The only module that branches on the database.

- SQLite: WAL, ``synchronous=FULL`` (durable commits), a busy timeout, and every transaction
  opened with ``BEGIN IMMEDIATE`` so a write transaction takes the lock up front instead of
  failing with "database is locked" when it upgrades from a read.
- PostgreSQL and MariaDB/MySQL: claims with ``FOR UPDATE SKIP LOCKED``; MariaDB runs at
  READ COMMITTED so a claim's range scan takes no gap locks that would stall enqueues.
- PostgreSQL through psycopg 3: no server-side prepared statements (prepare_threshold), so
  it works behind PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Engine,
    Select,
    String,
    Table,
    TypeDecorator,
    any_,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import column as sql_column
from sqlalchemy import inspect as inspect_db
from sqlalchemy import table as lightweight_table
from sqlalchemy.engine import Connection, CursorResult, Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from tickrun import clock
from tickrun.schema import CLAIM_ORDER_MARIADB, UTCDateTime

SQLITE_BUSY_TIMEOUT_MS = 30_000


def inserted_id(result: CursorResult[Any]) -> int:
    """The id of the one row an INSERT added to a table with an integer id."""
    return int(inserted_key(result))


def inserted_key(result: CursorResult[Any]) -> Any:
    """The primary key of the one row an INSERT added."""
    key = result.inserted_primary_key
    assert key is not None, "not a single-row INSERT"
    return key[0]


def kind(bind: Engine | Connection) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
    name = bind.dialect.name
    return "mysql" if name == "mariadb" else name


# How long a run can hang on a database that stopped answering (a host cut off, a server
# gone): a connect gives up after CONNECT_TIMEOUT; on PostgreSQL a request the server never
# acknowledged fails after TCP_USER_TIMEOUT_MS, and a reply that never comes after the
# keepalive probes (idle 5 s, then 3 probes 2 s apart: 11 s). No statement_timeout: the
# server enforces it, which does not help a host it cannot reach, and PgBouncer refuses
# the startup `options` that would carry it. A value given in the URL's query wins.
CONNECT_TIMEOUT = 10
POSTGRES_LINK_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# PyMySQL has no keepalive setting: a read or write that waits longer than this fails.
MYSQL_LINK_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "read_timeout": 60,
    "write_timeout": 60,
}


def engine_options(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if backend == "postgresql":
        connect_args = _unless_in_url(parsed.query, POSTGRES_LINK_OPTIONS)
        options: dict[str, Any] = {"connect_args": connect_args}
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # tickrun stores no hstore: without this, the dialect's first connection looks the
            # type up (a savepoint, a catalog query, its release), three round trips of every
            # cron tick's start (bench/README.md, "W5 on PostgreSQL").
            options["use_native_hstore"] = False
        if parsed.get_driver_name() == "psycopg":
            connect_args["prepare_threshold"] = prepare_threshold(parsed.query)
        return options
    if backend in ("mysql", "mariadb"):
        return {
            "isolation_level": "READ COMMITTED",
            "connect_args": _unless_in_url(parsed.query, MYSQL_LINK_OPTIONS),
        }
    return {}


def _unless_in_url(query: Mapping[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    # SQLAlchemy lets connect_args override the URL's query; the user's own value must win.
    return {name: value for name, value in defaults.items() if name not in query}


def prepare_threshold(query: Mapping[str, str | tuple[str, ...]]) -> int | None:
    """psycopg's ``prepare_threshold`` for tickrun's connections: None (never prepare) unless
    the URL asks for a number, as in ``postgresql+psycopg://host/db?prepare_threshold=5``.

    psycopg 3 prepares a statement on the server once a connection has run it 5 times (its
    default). Behind PgBouncer in transaction pooling mode, consecutive transactions of one
    client may land on different server connections, so a statement prepared on one is
    missing on the next (``prepared statement "_pg3_0" does not exist``), or a server
    connection already holds a ``_pg3_0`` that another client prepared
    (``prepared statement "_pg3_0" already exists``). A pooler cannot be detected from the
    client (it forwards the server's greeting), and the failure comes only after the fifth
    run of a statement, so tickrun never prepares. On a direct connection that costs 9 % of
    one-at-a-time enqueues and 15 % of a run's drain rate, mostly psycopg's executemany() of
    a batch's attempts, which parses each row's INSERT again (bench/README.md, "Prepared
    statements"; the analysis in bench/LOG.md). ``?prepare_threshold=N`` turns preparing back
    on for direct connections and ``none`` keeps it off; the URL's text is parsed here
    because SQLAlchemy would hand it to psycopg as a string, where psycopg needs an int or
    None.
    """
    value = query.get("prepare_threshold")
    if isinstance(value, tuple):
        value = value[-1]
    if value is None or value.strip().lower() in ("", "none", "null"):
        return None
    try:
        threshold = int(value)
    except ValueError:
        raise ValueError(
            f"prepare_threshold must be a whole number or none, not {value!r}"
        ) from None
    if threshold < 0:
        raise ValueError(f"prepare_threshold must be 0 or more, not {threshold}")
    return threshold


def configure(engine: Engine) -> None:
    if kind(engine) != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it would BEGIN lazily and
        # deferred; the "begin" hook below opens every transaction IMMEDIATE instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_LONE_READ):
            return  # one SELECT, in the driver's autocommit: no write lock (see for_lone_reads)
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_LONE_READ = "tickrun_lone_read"


@cache  # one view per engine: building one per lookup would cost more than the lookup
def for_lone_reads(engine: Engine) -> Engine:
    """An engine for a lookup that is one SELECT (``app.status()``, polled by web endpoints):
    it needs no transaction, and must not take one that costs others.

    SQLite: without this, the ``BEGIN IMMEDIATE`` of every tickrun transaction would make each
    lookup take the write lock, queueing behind a run's commits and holding runs up in turn; a
    lone SELECT in the driver's autocommit mode reads one consistent snapshot on its own.
    PostgreSQL: autocommit saves the BEGIN and the ROLLBACK round trips, as for enqueues.
    MariaDB: unchanged; switching a PyMySQL connection to autocommit and back costs more round
    trips than the implicit transaction it saves.
    """
    backend = kind(engine)
    if backend == "sqlite":
        return engine.execution_options(**{_LONE_READ: True})
    if backend == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def rebuild_sqlite_table(conn: Connection, table: Table) -> None:
    """Re-create an SQLite ``table`` from its current definition, keeping every row and id.

    SQLite cannot add AUTOINCREMENT (or most constraints) to an existing table; this is its
    documented procedure: a new table, the rows copied, the old one dropped. Inside the
    caller's transaction, so a failure leaves the old table as it was.
    """
    old_name = f"{table.name}_old"
    inspector = inspect_db(conn)
    present = {c["name"] for c in inspector.get_columns(table.name)}  # later columns: NULL
    for index in inspector.get_indexes(table.name):  # the new table's indexes take the names
        conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old_name}"')
    table.create(conn)
    stored = [c for c in table.columns if c.computed is None and c.name in present]
    old = lightweight_table(old_name, *(sql_column(c.name) for c in stored))
    conn.execute(insert(table).from_select([c.name for c in stored], select(*old.c)))
    conn.exec_driver_sql(f'DROP TABLE "{old_name}"')


def add_column(conn: Connection, table: Table, column: Any) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for a column of ``table``'s metadata (names quoted by the
    dialect; nothing here comes from data)."""
    from sqlalchemy.schema import CreateColumn

    spec = CreateColumn(column).compile(dialect=conn.dialect)
    quote = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {spec}")


def raise_sqlite_sequence(conn: Connection, table: Table, floor: Select[Any]) -> None:
    """Make the next AUTOINCREMENT id of ``table`` exceed the value ``floor`` selects."""
    value = conn.execute(floor).scalar()
    if value is None:
        return
    seq = conn.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = :name"), {"name": table.name}
    ).scalar()
    if seq is None:
        conn.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"),
            {"name": table.name, "seq": value},
        )
    elif seq < value:
        conn.execute(
            text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :name"),
            {"name": table.name, "seq": value},
        )


def autocommit_enqueue(engine: Engine) -> Engine | None:
    """An engine whose statements commit on their own, where that makes enqueues faster.

    An enqueue with a key is an INSERT ... ON CONFLICT and, for a taken key, a read: each
    stands alone, and on PostgreSQL running them without BEGIN/COMMIT saves two of three
    round trips (measured here: 1,960 vs 1,040 commits/s). Keyless enqueues get the same
    from insert_one. SQLite needs its IMMEDIATE transactions and MariaDB its
    savepoint, so they keep explicit transactions.
    """
    if kind(engine) != "postgresql":
        return None
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def insert_one(engine: Engine, table: Table, row: dict[str, Any]) -> int:
    """Insert one row in a durable transaction of its own, straight through the DB-API driver;
    its id.

    This is every keyless ``enqueue`` outside the caller's transaction, the hottest write
    there is. SQLAlchemy's per-statement machinery (execution context, events, the
    ``BEGIN IMMEDIATE`` hook run as a statement of its own) cost as much as the durable commit
    itself: 3,100 enqueues/s on SQLite against 6,500/s for the bare driver, measured here.
    Driver errors are raised as SQLAlchemy's; the pool's reset-on-return rolls back a failed
    transaction.
    """
    backend = kind(engine)
    dbapi_error = engine.dialect.loaded_dbapi.Error
    sql, processors = _insert_one_plan(engine.dialect, table, tuple(row))
    params = tuple(p(v) if p else v for p, v in zip(processors, row.values(), strict=True))
    try:
        raw = engine.raw_connection()
    except dbapi_error as exc:  # raw_connection() leaves a failed connect unwrapped
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
    driver: Any = raw.driver_connection
    cursor: Any = None
    try:
        cursor = raw.cursor()
        if backend == "postgresql":
            # One autocommit statement: no BEGIN/COMMIT round trips, and the same durable
            # commit (synchronous_commit applies to it as to any transaction).
            driver.autocommit = True
            try:
                cursor.execute(sql, params)
                return int(cursor.fetchone()[0])
            finally:
                try:
                    driver.autocommit = False
                except dbapi_error:
                    # Interrupted mid-statement (a signal, a timeout), or broken: never let
                    # the pool hand it out in autocommit, where transactions stop being atomic.
                    raw.invalidate()
        if backend == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")  # see configure(): take the write lock up front
        cursor.execute(sql, params)
        new_id = int(cursor.lastrowid)
        raw.commit()
        return new_id
    except dbapi_error as exc:
        lost = engine.dialect.is_disconnect(exc, driver, cursor)
        if lost:
            # As SQLAlchemy does: the server dropped us, so it dropped the pool's other
            # connections too; start afresh instead of failing once per pooled connection.
            if raw.is_valid:  # the autocommit restore above may have invalidated it already
                raw.invalidate(exc)
            engine.dispose()
        raise DBAPIError.instance(
            sql, params, exc, dbapi_error, connection_invalidated=lost
        ) from exc
    finally:
        raw.close()


@cache
def _insert_one_plan(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[str, list[Callable[[Any], Any] | None]]:
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    if dialect.name == "postgresql":
        sql += f" RETURNING {quote(table.primary_key.columns[0].name)}"
    return sql, [table.c[c].type.bind_processor(dialect) for c in columns]


def any_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column = ANY(:name)``, bound to a list (PostgreSQL): one array parameter where an
    IN list would send and render one parameter per value."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == any_(bindparam(name, type_=ARRAY(column.type)))


def newest_id(table: Table, backend: str) -> ColumnElement[Any]:
    """The highest id ``table`` has given out, as a scalar subquery: on PostgreSQL its
    sequence's, which also counts rows deleted since (pruned, purged) and inserts not yet
    committed; elsewhere the highest id there is (NULL for none)."""
    (pk,) = table.primary_key.columns
    if backend != "postgresql":
        return select(func.max(pk)).scalar_subquery()
    from sqlalchemy.dialects.postgresql import REGCLASS

    sequence = func.pg_get_serial_sequence(table.name, pk.name).cast(REGCLASS)
    return select(func.pg_sequence_last_value(sequence)).scalar_subquery()


def skip_locked(stmt: Select[Any], conn: Connection) -> Select[Any]:
    """Row locks concurrent claimers step over (SQLite: the IMMEDIATE lock excludes them)."""
    if kind(conn) == "sqlite":
        return stmt
    return stmt.with_for_update(skip_locked=True)


def for_claim(stmt: Select[Any], backend: str) -> Select[Any]:
    """The claim's SELECT as this database must run it (after ``before_claim``): in the order
    of the claim index, and stepping over rows that concurrent claimers hold.

    A queue table's statistics are stale by nature (rows churn faster than ANALYZE runs, and
    autovacuum may be off), and both servers then read the whole table and sort it: 16 ms a
    claim on PostgreSQL with 20,000 rows instead of 0.35 ms. PostgreSQL is kept on the index
    by ``before_claim``, MariaDB with an index hint on its stand-in for a partial index
    (schema.py: ix_tickrun_tasks_claim_mariadb).
    """
    if backend == "sqlite":
        return stmt
    if backend == "mysql":
        # The same order through claim_priority, which equals priority on unfinished rows.
        stmt = _mariadb_range(stmt, claim_order=True)
    return stmt.with_for_update(skip_locked=True)


def before_claim(conn: Connection) -> None:
    """Keep PostgreSQL's planner on the claim index for the rest of this transaction
    (``set_config(..., true)``, so nothing leaks into a pooled session: PgBouncer transaction
    mode is fine)."""
    if kind(conn) == "postgresql":
        conn.exec_driver_sql(
            "SELECT set_config('enable_seqscan', 'off', true),"
            " set_config('enable_sort', 'off', true)"
        )


def unfinished(stmt: Select[Any], conn: Connection, *, claim_order: bool = False) -> Select[Any]:
    """A read-only SELECT of unfinished tasks (``claimable_at <= now``, as ``tickrun due`` and
    the dashboard count them) as this database answers it from the claim index rather than by
    reading every finished row.

    SQLite and PostgreSQL plan it on the partial index as it is. MariaDB has no partial index:
    there the same range of its stand-in (claim_priority is NULL once a task is finished) and
    an index hint keep it off the million finished rows (2.2 s for ``tickrun due`` beside
    1,000,000 of them otherwise). With ``claim_order`` (the SELECT is ordered by CLAIM_ORDER)
    it is ordered by the index's own columns, the same order on unfinished rows.
    """
    return _mariadb_range(stmt, claim_order) if kind(conn) == "mysql" else stmt


def _mariadb_range(stmt: Select[Any], claim_order: bool) -> Select[Any]:
    (table,) = stmt.get_final_froms()
    stmt = stmt.where(table.c.claim_priority.isnot(None))
    if claim_order:
        stmt = stmt.order_by(None).order_by(*CLAIM_ORDER_MARIADB)
    hint = "FORCE INDEX (ix_tickrun_tasks_claim_mariadb)"
    return stmt.with_hint(table, hint, "mysql").with_hint(table, hint, "mariadb")


def locked(stmt: Select[Any], conn: Connection) -> Select[Any]:
    """Lock the selected rows until commit, so a fencing check and its write are atomic."""
    if kind(conn) == "sqlite":
        return stmt
    return stmt.with_for_update()


def insert_unless_exists(
    conn: Connection, table: Table, values: dict[str, Any], unique: str = "key"
) -> Any | None:
    """Insert a row; return its primary key, or None when a row with the same ``unique`` exists.

    Concurrent inserts of one key wait for each other and exactly one wins, on every database.
    """
    backend = kind(conn)
    if backend in ("postgresql", "sqlite"):
        return conn.execute(_insert_or_nothing(backend, table, unique), values).scalar()
    # InnoDB rolls back only the failing statement on a duplicate key, but the caller's
    # transaction may be ours or theirs: a savepoint keeps either intact.
    try:
        with conn.begin_nested():
            return inserted_key(conn.execute(insert(table), values))
    except IntegrityError as exc:
        if getattr(exc.orig, "args", (None,))[0] != 1062:  # ER_DUP_ENTRY
            raise
        return None


def upsert(conn: Connection, table: Table, values: dict[str, Any], unique: str) -> None:
    """Insert a row, or update the row with the same ``unique`` value, in one statement.

    One statement, so that it locks the row exclusively from the start: an INSERT that fails
    on a duplicate key and is followed by an UPDATE holds a shared lock on the row in between
    (InnoDB), and two transactions doing that to one row deadlock.
    """
    changes = {k: v for k, v in values.items() if k != unique}
    backend = kind(conn)
    if backend == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt: Any = mysql_insert(table).values(values)
        conn.execute(stmt.on_duplicate_key_update(**{k: stmt.inserted[k] for k in changes}))
        return
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).values(values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[unique], set_={k: stmt.excluded[k] for k in changes}
        )
    )


@cache
def _insert_or_nothing(backend: str, table: Table, unique: str) -> Any:
    """Built once: constructing a statement per enqueue costs more than running it."""
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    return stmt.on_conflict_do_nothing(index_elements=[unique]).returning(
        *table.primary_key.columns
    )


def insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows with the same columns, one statement per BULK_DOCUMENT_BYTES of JSON, in
    the caller's transaction; their ids, in the rows' order.

    Values every row shares are bound once; the others travel as one JSON array of rows that
    the database's own JSON functions unpack in C. Binding 13 columns per row (SQLite,
    MariaDB) or dumping 13 text arrays in Python for ``unnest()`` (PostgreSQL) took most of a
    bulk enqueue's time. Varying values must be JSON types once bound (a batch of enqueues
    shares one time). MariaDB needs 10.6 (JSON_TABLE); SQLite its JSON functions (built in
    since 3.38, and in the builds of every common platform before that).
    """
    backend = kind(conn)
    first = rows[0]
    shared = [c for c in first if all(row[c] == first[c] for row in rows)]
    varying = [c for c in first if c not in shared]
    plan = [(c, table.c[c].type.bind_processor(conn.dialect)) for c in varying]
    values = [[p(row[c]) if p else row[c] for c, p in plan] for row in rows]
    quote = conn.dialect.identifier_preparer.quote
    # Values are unpacked as text (PostgreSQL: strings as TEXT, the rest as the column's
    # type; MariaDB: all as LONGTEXT), and the INSERT converts them into the column: a value
    # too long or out of range then fails as a single enqueue's would (on MariaDB in strict
    # mode, its default), where a cast to VARCHAR(n) or a JSON_TABLE column of the column's
    # type would truncate or clamp it with a mere warning. Rows are inserted in the order
    # given, so their ids ascend in that order (claims take equal tasks by id).
    if backend == "postgresql":
        types = [
            "TEXT" if _is_text(table.c[c].type) else table.c[c].type.compile(conn.dialect)
            for c in varying
        ]
        source = "json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS r(v, n)"
        unpacked = [f"CAST(v->>{i} AS {type_})" for i, type_ in enumerate(types)]
        order = "n"
    elif backend == "mysql":
        columns = ["n FOR ORDINALITY"]
        columns += [f"c{i} LONGTEXT PATH '$[{i}]'" for i in range(len(varying))]
        source = f"JSON_TABLE(:rows, '$[*]' COLUMNS ({', '.join(columns)})) AS r"
        unpacked = [f"r.c{i}" for i in range(len(varying))]
        order = "r.n"
    else:
        source = "json_each(:rows)"
        unpacked = [f"json_extract(value, '$[{i}]')" for i in range(len(varying))]
        order = "key"
    stmt = text(
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in shared + varying)}) "
        f"SELECT {', '.join([f':s{i}' for i in range(len(shared))] + unpacked)} "
        f"FROM {source} ORDER BY {order} "
        f"RETURNING {quote(table.primary_key.columns[0].name)}"
    ).bindparams(
        *(bindparam(f"s{i}", first[c], type_=table.c[c].type) for i, c in enumerate(shared))
    )
    return [
        new_id
        for document in _json_documents(values)
        for new_id in conn.execute(stmt, {"rows": document}).scalars()
    ]


def _is_text(type_: TypeEngine[Any]) -> bool:
    while isinstance(type_, TypeDecorator):
        type_ = cast(TypeEngine[Any], type_.impl)  # an instance on SQLAlchemy 2.0 and 2.1
    return isinstance(type_, String)


# Each statement's JSON document stays under this many bytes, well under the smallest
# statement a server takes by default (MariaDB's max_allowed_packet: 16 MiB).
BULK_DOCUMENT_BYTES = 4 * 1024 * 1024


def _json_documents(rows: list[list[Any]]) -> Iterator[str]:
    """``rows`` as JSON arrays of at most BULK_DOCUMENT_BYTES each (one row may exceed it)."""
    document = json.dumps(rows, separators=(",", ":"))
    if len(document) <= BULK_DOCUMENT_BYTES:  # ASCII (ensure_ascii): characters are bytes
        yield document
        return
    chunk: list[str] = []
    size = 2
    for row in rows:
        text = json.dumps(row, separators=(",", ":"))
        if chunk and size + len(text) > BULK_DOCUMENT_BYTES:
            yield "[" + ",".join(chunk) + "]"
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    yield "[" + ",".join(chunk) + "]"


def existing_key_id(conn: Connection, table: Table, key: str) -> int:
    """The id of the row holding ``key``; a locking read sees rows committed after our snapshot."""
    stmt = select(table.c.id).where(table.c.key == key)
    if kind(conn) == "mysql":
        stmt = stmt.with_for_update(read=True)
    return int(conn.execute(stmt).scalar_one())


def lock_schema(conn: Connection) -> None:
    """Serialise concurrent ``init`` runs where the database allows it inside a transaction."""
    if kind(conn) == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7305412698)")


def sqlite_settings(conn: Connection) -> dict[str, Any] | None:
    """SQLite's journal mode and busy timeout as this connection has them; None elsewhere."""
    if kind(conn) != "sqlite":
        return None
    return {
        "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
        "busy_timeout_ms": conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
    }


# PostgreSQL wakes `tickrun worker` processes with NOTIFY on this channel. A trigger sends it,
# so every way a task is written (enqueue, enqueue_many, follow-ups, schedule occurrences, a
# release or retry making one pending) notifies, and only when its transaction commits.
NOTIFY_CHANNEL = "tickrun_tasks"
_NOTIFY_DDL = (
    "CREATE OR REPLACE FUNCTION tickrun_notify() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS tickrun_tasks_inserted ON tickrun_tasks",
    # Per statement: a batch of 10,000 enqueues sends one notification, not 10,000.
    "CREATE TRIGGER tickrun_tasks_inserted AFTER INSERT ON tickrun_tasks "
    "FOR EACH STATEMENT EXECUTE PROCEDURE tickrun_notify()",
    "DROP TRIGGER IF EXISTS tickrun_tasks_pending ON tickrun_tasks",
    # Per row but filtered in C by WHEN: claims and outcomes (most updates) never call it.
    "CREATE TRIGGER tickrun_tasks_pending AFTER UPDATE OF status ON tickrun_tasks FOR EACH ROW "
    "WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending') "
    "EXECUTE PROCEDURE tickrun_notify()",
)


def install_notify(conn: Connection) -> None:
    """The NOTIFY trigger on PostgreSQL (idempotent); nothing elsewhere: workers poll there."""
    if kind(conn) != "postgresql":
        return
    for statement in _NOTIFY_DDL:
        conn.exec_driver_sql(statement)


def relayed(dbapi_connection: Any) -> bool:
    """Whether a psycopg 3 connection to PostgreSQL goes through a pooler (PgBouncer, and the
    like): the backend pid the client was given at connect is not that of the server session
    running its statements, since a pooler hands out keys of its own. Asked without leaving
    any session state behind, unlike a LISTEN."""
    (server_pid,) = dbapi_connection.execute("SELECT pg_backend_pid()").fetchone()
    return bool(server_pid != dbapi_connection.info.backend_pid)


def listen(dbapi_connection: Any) -> None:
    """Subscribe a PostgreSQL connection (autocommit) to the workers' channel."""
    dbapi_connection.execute(f"LISTEN {NOTIFY_CHANNEL}")


def notify(conn: Connection) -> None:
    """A notification on the workers' channel, sent when ``conn``'s transaction commits (the
    listener's self-test)."""
    conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")


# -- the database's clock (tickrun.clock) ------------------------------------------------------


class database_now(FunctionElement[datetime]):  # noqa: N801 - an SQL function, named as one
    """The database's current instant as a naive UTC timestamp, as the statement started.

    A statement sent after a lock wait reads a time after it: what a limit counts must be.
    SQLite has no clock apart from the host's: tickrun binds that there (``bound_now``).
    """

    type = UTCDateTime()
    name = "database_now"
    inherit_cache = True


@compiles(database_now, "postgresql")
def _postgresql_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "(statement_timestamp() AT TIME ZONE 'UTC')"


@compiles(database_now, "mysql")
@compiles(database_now, "mariadb")
def _mariadb_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


class _now_or(FunctionElement[datetime]):  # noqa: N801 - an SQL expression
    type = UTCDateTime()
    name = "now_or"
    inherit_cache = True


@compiles(_now_or)
def _sqlite_now_or(element: _now_or, compiler: SQLCompiler, **kw: Any) -> str:
    (pinned,) = element.clauses
    return compiler.process(pinned, **kw)  # always bound (bound_now): the host is the clock


@compiles(_now_or, "postgresql")
def _postgresql_now_or(element: _now_or, compiler: SQLCompiler, **kw: Any) -> str:
    (pinned,) = element.clauses
    return f"coalesce({compiler.process(pinned, **kw)}, {compiler.process(database_now())})"


@compiles(_now_or, "mysql")
@compiles(_now_or, "mariadb")
def _mariadb_now_or(element: _now_or, compiler: SQLCompiler, **kw: Any) -> str:
    (pinned,) = element.clauses
    # Cast, or MariaDB types the COALESCE of a bound string as a string.
    pinned_sql = compiler.process(pinned, **kw)
    return f"coalesce(CAST({pinned_sql} AS DATETIME(6)), {compiler.process(database_now())})"


def now_or(pinned: BindParameter[datetime]) -> ColumnElement[datetime]:
    """``pinned`` when it is bound to a time, else the database's clock: bind it with
    :func:`bound_now`."""
    return _now_or(pinned)


def bound_now(pinned: datetime | None, bind: Engine | Connection) -> datetime | None:
    """What to bind to a :func:`now_or` parameter: the pinned time (a frozen test's), else
    None so the database's clock decides, but on SQLite the host's clock, read now (inside
    the transaction, after its write lock is held)."""
    if pinned is None and kind(bind) == "sqlite":
        return clock.now()
    return pinned


def current_time(conn: Connection, pinned: datetime | None) -> datetime:
    """The time by the clock that judges leases (``bound_now``), read at this point of
    ``conn``'s transaction: one round trip on PostgreSQL and MariaDB."""
    now = bound_now(pinned, conn)
    if now is not None:
        return now
    return conn.execute(select(database_now())).scalar_one()


class _plus_seconds(FunctionElement[datetime]):  # noqa: N801 - an SQL expression
    type = UTCDateTime()
    name = "plus_seconds"
    inherit_cache = True


@compiles(_plus_seconds, "postgresql")
def _postgresql_plus(element: _plus_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    at, seconds = element.clauses
    return (
        f"({compiler.process(at, **kw)} + make_interval(secs => {compiler.process(seconds, **kw)}))"
    )


def plus_seconds(
    at: ColumnElement[datetime], seconds: ColumnElement[Any]
) -> ColumnElement[datetime]:
    """``at`` plus a number of seconds, in SQL (PostgreSQL: the one-statement fresh claim)."""
    return _plus_seconds(at, seconds)
