"""The real ``tickrun`` command in a subprocess: init / enqueue / run, configuration, and every
bad input ending with the contract's exit code and one ``error:`` line."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, ServerDatabases, cli_env, empty_tables, tickrun, write_app
from tests.helpers.cli import COMMANDS_NEEDING_SCHEMA
from tickrun import App, PayloadError, UsageError, __version__, store
from tickrun.database import open_engine
from tickrun.migrations import init_schema
from tickrun.schema import attempts, runs, tasks

APP = """
from tickrun import App

app = App()

@app.task
def hello(name: str) -> None:
    print(f"hello {name}")

@app.task(max_attempts=1)
def doomed() -> None:
    raise ValueError("doomed")

@app.task(max_attempts=3, backoff=600)
def flaky() -> None:
    raise ValueError("flaky")
"""
UNREACHABLE = "postgresql+psycopg://postgres:s3cretpw@127.0.0.1:1/x"
SECRET = "s3cretpw"
SUMMARY = re.compile(
    r"^tickrun run (\d+): claimed (\d+), succeeded (\d+), retried (\d+), dead (\d+)"
    r".* in \d+\.\d\ds \[worker [^\]]+\]$"
)


@dataclass
class Project:
    """A working directory with jobs.py and an initialised SQLite database, set through env."""

    dir: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return tickrun(*args, cwd=self.dir, env={**self.env, **(env or {})})

    def counts(self) -> tuple[int, int, int]:
        """Rows in tickrun_tasks, tickrun_runs, tickrun_attempts."""
        with open_engine(self.url).connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (tasks, runs, attempts)
            )

    def seed(self) -> None:
        """One pending ``hello`` task, enqueued in-process (a bad command must not touch it)."""
        app = App()
        app.task(name="hello")(lambda name: None)
        with open_engine(self.url).begin() as conn:
            store.insert_tasks(conn, [app.task_row("hello", {"name": "waiting"})])

    def tasks(self) -> list[dict]:
        with open_engine(self.url).connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(tasks).order_by(tasks.c.id))]


@pytest.fixture
def proj(project: Path) -> Project:
    write_app(project, APP)
    url = f"sqlite:///{project / 'tickrun.db'}"
    init_schema(open_engine(url))
    return Project(project, url, {"TICKRUN_DATABASE_URL": url, "TICKRUN_APP": "jobs:app"})


def assert_error(
    result: subprocess.CompletedProcess[str], code: int, needle: str | None = None
) -> str:
    """The contract for every failure: its exit code, one ``error:`` line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    if needle is not None:
        assert needle in lines[0], lines[0]
    return lines[0]


def summary_of(result: subprocess.CompletedProcess[str]) -> tuple[int, ...]:
    """(claimed, succeeded, retried, dead) from the one-line run summary."""
    last = result.stdout.splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, result.stdout
    return tuple(int(n) for n in match.groups()[1:])


# -- init, help, version ---------------------------------------------------------------------


def test_init_creates_the_schema(project: Path) -> None:
    url = f"sqlite:///{project / 'app.db'}"
    result = tickrun("init", cwd=project, db=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("tickrun schema version ")
    assert "created" in result.stdout


def test_init_twice_keeps_the_schema_and_its_rows(project: Path, db_url: str) -> None:
    # db_url is already initialised: each init below is a repeat.
    app = App()
    app.task(name="hello")(lambda name: None)
    with open_engine(db_url).begin() as conn:
        [(task_id, _)] = store.insert_tasks(conn, [app.task_row("hello", {"name": "kept"})])
    for _ in range(2):
        result = tickrun("init", cwd=project, db=db_url)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert "already current" in result.stdout
    with open_engine(db_url).connect() as conn:
        assert conn.execute(select(tasks.c.id, tasks.c.payload)).all() == [
            (task_id, '{"name":"kept"}')
        ]


def test_version(project: Path) -> None:
    result = tickrun("--version", cwd=project)
    assert result.returncode == 0
    assert __version__ in result.stdout
    assert list(project.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("init", []),
        ("enqueue", ["--payload", "--key", "--at", "--in", "--queue", "--priority", "--json"]),
        (
            "run",
            ["--queue", "--max-tasks", "--max-time", "--concurrency", "--worker", "--fail-on"],
        ),
    ],
)
def test_help(project: Path, command: str, options: list[str]) -> None:
    for args in ([command, "--help"], ["--help"]):
        result = tickrun(*args, cwd=project, db=UNREACHABLE, env={"TICKRUN_APP": "missing:app"})
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        if args[0] == command:
            assert result.stdout.startswith(f"Usage: tickrun {command} ")
            assert "--db" in result.stdout and "--app" in result.stdout
            for option in options:
                assert option in result.stdout
        else:
            assert command in result.stdout
    assert list(project.iterdir()) == []  # help needs no database and creates none


# -- configuration ---------------------------------------------------------------------------


def test_db_and_app_flags_before_and_after_the_command(project: Path) -> None:
    write_app(project, APP)
    url = f"sqlite:///{project / 'flags.db'}"
    assert tickrun("--db", url, "init", cwd=project).returncode == 0
    for args in (
        ["--db", url, "--app", "jobs:app", "enqueue", "hello", "--payload", '{"name": "a"}'],
        ["enqueue", "hello", "--payload", '{"name": "b"}', "--db", url, "--app", "jobs:app"],
        ["--app", "jobs:app", "enqueue", "hello", "--db", url, "--payload", '{"name": "c"}'],
        ["--db", url, "enqueue", "--app", "jobs:app", "hello", "--payload", '{"name": "d"}'],
    ):
        result = tickrun(*args, cwd=project)
        assert result.returncode == 0, (args, result.stderr)
    first = tickrun("run", "--db", url, "--app", "jobs:app", "--max-tasks", "2", cwd=project)
    second = tickrun("--db", url, "--app", "jobs:app", "run", cwd=project)
    assert summary_of(first) == (2, 2, 0, 0)
    assert summary_of(second) == (2, 2, 0, 0)
    assert first.stdout.splitlines()[:2] == ["hello a", "hello b"]
    assert not (project / "tickrun.db").exists()  # the default was never used


def test_configuration_precedence(project: Path) -> None:
    for level in ("py", "env", "flag"):
        source = f"from tickrun import App\napp = App()\n\n@app.task\ndef from_{level}(): ...\n"
        write_app(project, source, f"{level}app")

    def init(*flags: str, env: dict[str, str] | None = None) -> str:
        result = tickrun("init", *flags, cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def enqueue(task: str, *flags: str, env: dict[str, str] | None = None) -> int:
        return tickrun("enqueue", task, *flags, cwd=project, env=env).returncode

    assert "sqlite:///tickrun.db" in init()  # the default
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.tickrun]\ndatabase_url = "sqlite:///py.db"\n'
        'app = "pyapp:app"\n'
    )
    env = {"TICKRUN_DATABASE_URL": "sqlite:///env.db", "TICKRUN_APP": "envapp:app"}
    assert "sqlite:///py.db" in init()
    assert "sqlite:///env.db" in init(env=env)
    assert "sqlite:///flag.db" in init("--db", "sqlite:///flag.db", env=env)

    # The application follows the same order, each level hiding the ones below it.
    assert enqueue("from_py") == 0
    assert enqueue("from_env", env=env) == 0
    assert enqueue("from_py", env=env) == 2
    assert enqueue("from_flag", "--app", "flagapp:app", "--db", "sqlite:///flag.db", env=env) == 0
    assert enqueue("from_env", "--app", "flagapp:app", env=env) == 2
    for db, task in (("py.db", "from_py"), ("env.db", "from_env"), ("flag.db", "from_flag")):
        with open_engine(f"sqlite:///{project / db}").connect() as conn:
            names = conn.execute(select(tasks.c.name)).scalars().all()
        assert names == [task], db


@pytest.mark.slow
def test_same_result_from_a_bare_environment(tmp_path: Path, project: Path) -> None:
    """As cron runs it: no inherited environment but TICKRUN_*, another directory, another TZ,
    the application installed (here: on the path of a fresh virtual environment)."""
    apps = tmp_path / "site"
    apps.mkdir()
    write_app(apps, APP, "cronjobs")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = list(venv.glob("lib/python*/site-packages"))
    (site / "tickrun_test.pth").write_text(
        "\n".join([str(ROOT), sysconfig.get_paths()["purelib"], str(apps)]) + "\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    steps = [
        ["init"],
        ["enqueue", "hello", "--payload", '{"name": "naive"}', "--at", "2026-01-01T09:00:00"],
        ["enqueue", "hello", "--payload", '{"name": "later"}', "--at", "2999-01-01T00:00:00"],
        ["enqueue", "hello", "--payload", '{"name": "k"}', "--key", "k1", "--json"],
        ["enqueue", "hello", "--payload", '{"name": "k"}', "--key", "k1", "--json"],
        ["enqueue", "doomed"],
        ["run", "--worker", "w"],
    ]

    def replay(db: Path, python: str, cwd: Path, env: dict[str, str]) -> tuple[list, list]:
        env = {**env, "TICKRUN_DATABASE_URL": f"sqlite:///{db}", "TICKRUN_APP": "cronjobs:app"}
        outputs = []
        for args in steps:
            result = subprocess.run(
                [python, "-m", "tickrun", *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            out = re.sub(r"tickrun run \d+:| in \d+\.\d+s|sqlite:///\S+", "", result.stdout)
            err = re.sub(r"task \d+", "task N", result.stderr)
            outputs.append((args[0], result.returncode, out, err))
        with open_engine(f"sqlite:///{db}").connect() as conn:
            rows = conn.execute(
                select(
                    tasks.c.name,
                    tasks.c.status,
                    tasks.c.payload,
                    tasks.c.run_at,
                    tasks.c.key,
                    tasks.c.attempts,
                ).order_by(tasks.c.id)
            ).all()
        # run_at is compared where --at fixed it (the first two); the others follow the clock.
        return outputs, [tuple(r) if i < 2 else (*r[:3], None, *r[4:]) for i, r in enumerate(rows)]

    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
    shell_env["PYTHONPATH"] = str(apps)
    shell_env["TZ"] = "UTC"
    shell = replay(tmp_path / "shell.db", sys.executable, project, shell_env)
    bare = replay(
        tmp_path / "bare.db",
        str(venv / "bin" / "python"),
        elsewhere,
        {"TZ": "Pacific/Kiritimati"},  # UTC+14
    )
    assert bare == shell
    outputs, rows = shell
    assert [code for _, code, _, _ in outputs] == [0, 0, 0, 0, 0, 0, 1]
    assert rows[0][1:4] == ("succeeded", '{"name":"naive"}', datetime(2026, 1, 1, 9, tzinfo=UTC))
    assert rows[1][1] == "pending"
    assert rows[3][1] == "dead"
    assert list(elsewhere.iterdir()) == []


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_prints_the_id_and_json_fields(proj: Project) -> None:
    plain = proj("enqueue", "hello", "--payload", '{"name": "a"}')
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "1\n"
    first = proj("enqueue", "hello", "--payload", '{"name": "b"}', "--key", "k", "--json")
    again = proj("enqueue", "hello", "--payload", '{"name": "c"}', "--key", "k", "--json")
    assert first.returncode == again.returncode == 0
    assert json.loads(first.stdout) == {"id": 2, "duplicate": False}
    assert json.loads(again.stdout) == {"id": 2, "duplicate": True}
    table = proj("enqueue", "hello", "--payload", '{"name": "d"}', "--key", "k")
    assert table.stdout == "2\n"
    assert "already taken" in table.stderr
    assert proj.counts()[0] == 2


def test_enqueue_at_and_in(proj: Project) -> None:
    before = datetime.now(UTC)
    results = [
        proj("enqueue", "hello", "--payload", '{"name": "a"}', "--at", "2099-01-02T03:04:05+02:00"),
        proj("enqueue", "hello", "--payload", '{"name": "b"}', "--at", "2099-01-02T03:04:05"),
        proj("enqueue", "hello", "--payload", '{"name": "c"}', "--in", "10m"),
        proj("enqueue", "hello", "--payload", '{"name": "d"}', "--in", "1h30m"),
        proj("enqueue", "hello", "--payload", '{"name": "e"}', "--in", "45"),
        proj("enqueue", "hello", "--payload", '{"name": "f"}', "--in", "1w"),
        proj("enqueue", "hello", "--payload", '{"name": "g"}', "--in", "1m500ms"),
    ]
    after = datetime.now(UTC)
    assert [r.returncode for r in results] == [0] * 7, [r.stderr for r in results]
    run_at = [t["run_at"] for t in proj.tasks()]
    assert run_at[0] == datetime(2099, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert run_at[1] == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)  # no offset: UTC
    for when, seconds in zip(run_at[2:], (600, 5400, 45, 604800, 60.5), strict=True):
        assert before + timedelta(seconds=seconds) <= when <= after + timedelta(seconds=seconds)
    assert summary_of(proj("run"))[0] == 0  # none of them is due yet


def test_enqueue_reads_a_payload_too_large_for_a_command_line_from_a_file_or_stdin(
    proj: Project,
) -> None:
    big = {"name": "x" * 300_000}  # one argument may be 128 KiB at most (Linux's MAX_ARG_STRLEN)
    text = json.dumps(big)
    (proj.dir / "p.json").write_text(text)
    results = [
        proj("enqueue", "hello", "--payload-file", "p.json"),
        tickrun("enqueue", "hello", "--payload", "-", cwd=proj.dir, env=proj.env, input=text),
        tickrun("enqueue", "hello", "--payload-file", "-", cwd=proj.dir, env=proj.env, input=text),
    ]
    assert [(r.returncode, r.stdout) for r in results] == [(0, "1\n"), (0, "2\n"), (0, "3\n")]
    assert [json.loads(t["payload"]) for t in proj.tasks()] == [big] * 3
    with pytest.raises(OSError, match="too long"):
        proj("enqueue", "hello", "--payload", text)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"[1]", "not an array"),
        (b"null", "JSON object, not null"),
        (b"", "invalid JSON"),
        (b'{"name": "' + b"\xff" + b'"}', "payload from p.json is not valid UTF-8"),
        (b'{"name": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested more than 100 levels"),
        (b'{"name": ' + b"1" * 10_000 + b"}", "more than 4300 digits"),
    ],
    ids=["array", "null", "empty", "not-utf8", "deep", "huge-int"],
)
def test_a_bad_payload_from_a_file_or_stdin_exits_2(
    proj: Project, data: bytes, needle: str
) -> None:
    (proj.dir / "p.json").write_bytes(data)
    from_file = proj("enqueue", "hello", "--payload-file", "p.json")
    assert_error(from_file, 2, needle.replace("not an array", "an array"))
    stdin = subprocess.run(
        [sys.executable, "-m", "tickrun", "enqueue", "hello", "--payload", "-"],
        cwd=proj.dir,
        env=cli_env(None, proj.env),
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert stdin.returncode == 2, stdin.stderr
    [line] = stdin.stderr.decode().splitlines()
    assert (
        line.startswith("error: ")
        and needle.replace("p.json", "stdin").replace("not an array", "an array") in line
    ), line
    assert proj.counts() == (0, 0, 0)


NOT_UTF8 = [
    ["enqueue", "hello", "--payload", '{"name": "a"}', "--key", "k\udcff"],
    ["enqueue", "hello", "--payload", '{"name": "\udcff"}'],
    ["due", "--task", "t\udcff"],
    ["dlq", "--queue", "q\udcff"],
    ["failures", "--task", "t\udcff"],
    ["dlq", "retry", "--all", "--task", "t\udcff"],
    ["check", "--stale", "s\udcff=1h"],
    ["run", "--queue", "q\udcff"],
]


@pytest.mark.parametrize("args", NOT_UTF8, ids=lambda a: " ".join(a[:2]))
def test_arguments_that_are_not_utf8_never_reach_the_database(
    project: Path, db_url: str, args: list[str]
) -> None:
    """Bytes that are not UTF-8 (Python keeps them as lone surrogates) made each driver fail
    mid-statement with a traceback: now one line and exit 2, before the database."""
    write_app(project, APP)
    result = tickrun(*args, cwd=project, db=db_url, env={"TICKRUN_APP": "jobs:app"})
    assert_error(result, 2, "not valid UTF-8")
    with open_engine(db_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == 0


def test_the_python_api_refuses_keys_and_groups_that_are_not_text(db_url: str) -> None:
    app = App(database_url=db_url)

    @app.task(concurrency_key="account", concurrency=1)
    def sync(account: str, x: object = None) -> None: ...

    with pytest.raises(UsageError, match="key .* is not valid Unicode text"):
        app.enqueue("sync", {"account": "a"}, key="k\udcff")
    with pytest.raises(UsageError, match="group .* is not valid Unicode text"):
        app.enqueue("sync", {"account": "a"}, group="g\udcff")
    with pytest.raises(PayloadError, match="not valid Unicode text"):
        app.enqueue("sync", {"account": "a\udcff"})
    with pytest.raises(PayloadError, match="nested more than 100 levels"):
        app.enqueue("sync", {"account": "a", "x": _nested(100)})  # 101 levels with the object
    with pytest.raises(PayloadError, match="nested more than 100 levels"):
        app.enqueue("sync", {"account": "a", "x": _nested(5000)})  # json.dumps itself gives up
    with open_engine(db_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 0
    assert app.enqueue("sync", {"account": "a", "x": _nested(99)}) > 0  # 100 levels: allowed


def _nested(levels: int) -> list:
    """An array in an array ... ``levels`` deep."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


# -- run -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_summary_and_exit_codes(proj: Project) -> None:
    empty = proj("run")
    assert empty.returncode == 0
    assert summary_of(empty) == (0, 0, 0, 0)

    proj("enqueue", "hello", "--payload", '{"name": "ada"}')
    ok = proj("run", "--worker", "cron-1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["hello ada", ok.stdout.splitlines()[-1]]
    assert summary_of(ok) == (1, 1, 0, 0)
    assert "[worker cron-1]" in ok.stdout

    proj("enqueue", "flaky")
    retried = proj("run")
    assert retried.returncode == 0  # a retry is not a dead task
    assert summary_of(retried) == (1, 0, 1, 0)

    proj("enqueue", "doomed")
    dead = proj("run")
    assert dead.returncode == 1
    assert summary_of(dead) == (1, 0, 0, 1)
    assert "ValueError: doomed" in dead.stderr
    assert "Traceback" not in dead.stderr

    proj("enqueue", "doomed")
    never = proj("run", "--fail-on", "never")
    assert never.returncode == 0
    assert summary_of(never) == (1, 0, 0, 1)

    proj("enqueue", "flaky")
    strict = proj("run", "--fail-on", "failure")
    assert strict.returncode == 1  # any failed attempt counts
    assert summary_of(strict) == (1, 0, 1, 0)
    with open_engine(proj.url).connect() as conn:
        codes = conn.execute(select(runs.c.exit_code).order_by(runs.c.id)).scalars().all()
    assert codes == [0, 0, 0, 1, 0, 1]


# -- bad input -------------------------------------------------------------------------------

BAD_INPUTS = [
    pytest.param(["enqueue", "nope"], "unknown task 'nope'", id="unknown-task"),
    pytest.param(["enqueue", "hello", "--payload", "{bad"], "invalid JSON", id="invalid-json"),
    pytest.param(["enqueue", "hello", "--payload", "[1, 2]"], "an array", id="json-array"),
    pytest.param(["enqueue", "hello", "--payload", '"x"'], "JSON object", id="json-string"),
    pytest.param(["enqueue", "hello", "--payload", "null"], "JSON object, not null", id="null"),
    pytest.param(["enqueue", "hello", "--payload", "[" * 1000 + "]" * 1000], "nested", id="deep"),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a", "x": ' + "[" * 101 + "]" * 101 + "}"],
        "nested more than 100 levels",
        id="deep-101",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": ' + "9" * 5000 + "}"],
        "more than 4300 digits",
        id="huge-int",
    ),
    pytest.param(["enqueue", "hello", "--payload", "5" * 5000], "4300 digits", id="huge-top"),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "\udcff"}'],
        "not valid UTF-8",
        id="payload-not-utf8",
    ),
    *(  # bytes that are not UTF-8 (\xff), as Python hands them over
        pytest.param(
            ["enqueue", "hello", "--payload", '{"name": "a"}', flag, "x\udcff"],
            f"Invalid value for '{flag}': 'x\\xff' is not valid UTF-8",
            id=f"{flag[2:]}-not-utf8",
        )
        for flag in ("--key", "--group")
    ),
    pytest.param(["run", "--worker", "w\udcff"], "--worker", id="worker-not-utf8"),
    pytest.param(["due", "--queue", "q\udcff"], "--queue", id="due-queue-not-utf8"),
    pytest.param(
        ["enqueue", "hello", "--payload", "{}", "--payload-file", "p.json"],
        "give --payload or --payload-file, not both",
        id="payload-twice",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload-file", "missing.json"],
        "cannot read payload from missing.json",
        id="payload-file-missing",
    ),
    pytest.param(["enqueue", "hello", "--payload", '{"name": NaN}'], "JSON", id="json-nan"),
    pytest.param(["enqueue", "hello", "--payload", "{}"], "does not fit hello", id="missing-arg"),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a", "age": 3}'],
        "does not fit hello",
        id="extra-arg",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--in", "5x"], "5x", id="in-5x"
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--in", "-1m"], None, id="in-neg"
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--at", "yesterday"],
        "yesterday",
        id="at-yesterday",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--at", "2026-13-01"], None, id="at-13"
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--at", "2030-01-01", "--in", "1m"],
        "give --at or --in, not both",
        id="at-and-in",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--priority", "high"], None, id="prio"
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--priority", "99999999999"],
        "priority",
        id="prio-huge",
    ),
    pytest.param(
        ["enqueue", "hello", "--payload", '{"name": "a"}', "--queue", "two words"],
        "queue",
        id="queue",
    ),
    pytest.param(["enqueue", "hello", "--payload", '{"name": "a"}', "--key", ""], "key", id="key"),
    pytest.param(["enqueue"], "TASK", id="no-task"),
    pytest.param(["run", "--max-time", "-3"], "-3", id="max-time-neg"),
    pytest.param(["run", "--max-time", "soon"], "soon", id="max-time-word"),
    pytest.param(["run", "--max-tasks", "0"], None, id="max-tasks-0"),
    pytest.param(["run", "--concurrency", "0"], None, id="concurrency-0"),
    pytest.param(["run", "--fail-on", "sometimes"], None, id="fail-on"),
    pytest.param(["run", "--grace", "1y"], None, id="grace"),
    pytest.param(["run", "--bogus"], "--bogus", id="unknown-flag"),
    pytest.param(["frobnicate"], None, id="unknown-command"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUTS)
def test_bad_input_exits_2_and_writes_nothing(
    proj: Project, args: list[str], needle: str | None
) -> None:
    proj.seed()
    before = proj.counts()
    assert_error(proj(*args), 2, needle)
    assert proj.counts() == before
    [task] = proj.tasks()
    assert (task["status"], task["attempts"]) == ("pending", 0)


COMMANDS = [
    ["init"],
    ["run"],
    ["enqueue", "hello", "--payload", '{"name": "a"}'],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_unreachable_database_exits_3(project: Path, args: list[str]) -> None:
    write_app(project, APP)
    result = tickrun(*args, cwd=project, db=UNREACHABLE, env={"TICKRUN_APP": "jobs:app"})
    line = assert_error(result, 3, "database error")
    assert "127.0.0.1:1" in line
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [*COMMANDS, ["doctor"]], ids=lambda a: a[0])
def test_a_file_that_is_not_sqlite_exits_3_and_is_left_untouched(
    project: Path, args: list[str]
) -> None:
    write_app(project, APP)
    junk = project / "x.db"
    data = bytes(range(256)) * 64 + os.urandom(4096)
    junk.write_bytes(data)
    before = sorted(p.name for p in project.iterdir())
    result = tickrun(*args, cwd=project, db="sqlite:///x.db", env={"TICKRUN_APP": "jobs:app"})
    if args[0] == "doctor":
        assert result.returncode == 3
        assert "Traceback" not in result.stdout + result.stderr
    else:
        assert_error(result, 3, "not a database")
    assert junk.read_bytes() == data
    assert sorted(p.name for p in project.iterdir()) == before  # no -wal, -shm or journal


BAD_APPS = [
    pytest.param(None, "missing:app", "no module named 'missing'", id="missing-module"),
    pytest.param(
        'raise RuntimeError("at import")\n',
        "broken:app",
        "RuntimeError: at import",
        id="raises-at-import",
    ),
    pytest.param("import sys\nsys.exit(3)\n", "broken:app", "SystemExit", id="exits-at-import"),
    pytest.param("def f(:\n", "broken:app", "SyntaxError", id="syntax-error"),
    pytest.param(
        "import no_such_dependency\n", "broken:app", "no_such_dependency", id="missing-dependency"
    ),
    pytest.param("app = 42\n", "broken:app", "not a tickrun.App", id="not-an-app"),
    pytest.param(
        "from tickrun import App\napp = App()\n",
        "broken:nope",
        "not a tickrun.App",
        id="missing-attr",
    ),
    pytest.param(None, "not valid", "invalid application", id="bad-ref"),
]


@pytest.mark.parametrize(("source", "ref", "needle"), BAD_APPS)
@pytest.mark.parametrize("args", COMMANDS[1:], ids=lambda a: a[0])
def test_application_that_cannot_be_loaded_exits_2(
    proj: Project, args: list[str], source: str | None, ref: str, needle: str
) -> None:
    if source is not None:
        (proj.dir / "broken.py").write_text(source)
    before = proj.counts()
    assert_error(proj(*args, env={"TICKRUN_APP": ref}), 2, needle)
    assert proj.counts() == before


# The listing and repair commands, and the rest that open the database.
EVERY_COMMAND = [
    ["init"],
    *COMMANDS_NEEDING_SCHEMA,
    ["schedules"],
    ["runs"],
    ["alerts"],
    ["metrics"],
]


@pytest.mark.parametrize(("source", "ref", "needle"), [BAD_APPS[0], BAD_APPS[3], BAD_APPS[4]])
def test_a_given_application_that_cannot_be_loaded_is_an_error_for_every_command(
    proj: Project, source: str | None, ref: str, needle: str
) -> None:
    """Listing commands used to ignore it when the database came from elsewhere: a table,
    exit 0, and the typo unnoticed."""
    if source is not None:
        (proj.dir / "broken.py").write_text(source)
    proj.seed()
    before = proj.counts()
    commands = [[*args, "--app", ref] for args in EVERY_COMMAND]
    for args, result in zip(commands, run_all(commands, proj.dir, proj.url), strict=True):
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert_error(result, 2, needle)
    assert proj.counts() == before


def test_an_unknown_task_name_in_a_filter_is_an_error_naming_the_registered_tasks(
    proj: Project,
) -> None:
    proj.seed()
    retired = App()
    retired.task(name="retired")(lambda: None)
    with open_engine(proj.url).begin() as conn:
        [(dead_id, _)] = store.insert_tasks(conn, [retired.task_row("retired", {})])
        conn.execute(tasks.update().where(tasks.c.id == dead_id).values(status="dead"))
    before = proj.counts()
    for args in (
        ["due", "--task", "helo"],
        ["failures", "--task", "helo"],
        ["dlq", "--task", "helo"],
        ["dlq", "retry", "--all", "--task", "helo"],
        ["dlq", "purge", "--task", "helo"],
        # Retried, tasks no handler registers would only wait: refused even with rows.
        ["dlq", "retry", "--all", "--task", "retired"],
    ):
        line = assert_error(proj(*args), 2, "unknown task")
        assert f"unknown task '{args[-1]}' (registered: doomed, flaky, hello)" in line, line
    assert proj.counts() == before
    # A name whose handler is gone can still be listed and purged: its rows are there.
    listed = proj("dlq", "--task", "retired", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [dead_id]
    purged = proj("dlq", "purge", "--task", "retired")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith(f"purged 1 dead task and their history: {dead_id}")
    # Without an application there is nothing to check a name against: a filter.
    unloaded = proj("due", "--task", "helo", env={"TICKRUN_APP": ""})
    assert (unloaded.returncode, unloaded.stdout) == (0, "(nothing due)\n")


@pytest.mark.parametrize("args", COMMANDS[1:], ids=lambda a: a[0])
def test_commands_before_init_exit_2_and_create_no_file(project: Path, args: list[str]) -> None:
    write_app(project, APP)
    missing = project / "never.db"
    result = tickrun(*args, cwd=project, db=f"sqlite:///{missing}", env={"TICKRUN_APP": "jobs:app"})
    assert_error(result, 2, "tickrun init")
    assert not missing.exists()
    assert sorted(p.name for p in project.iterdir()) == ["jobs.py"]

    # A SQLite database that exists but has no tickrun schema: the same, and nothing created.
    other = project / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.close()
    result = tickrun(*args, cwd=project, db=f"sqlite:///{other}", env={"TICKRUN_APP": "jobs:app"})
    assert_error(result, 2, "tickrun init")
    with sqlite3.connect(other) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert names == ["users"]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "postgresql+psycopg://postgres:s3cretpw@127.0.0.1:notaport/x",
        "nosuchdb://postgres:s3cretpw@host/x",
    ],
    ids=["garbage", "bad-port", "unknown-dialect"],
)
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_malformed_database_url_exits_2(project: Path, url: str, args: list[str]) -> None:
    write_app(project, APP)
    result = tickrun(*args, cwd=project, db=url, env={"TICKRUN_APP": "jobs:app"})
    assert_error(result, 2, "invalid database URL")
    assert SECRET not in result.stdout + result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["jobs.py"]


@pytest.mark.parametrize(
    ("backend", "schemes"),
    [("postgresql", ["postgres", "postgresql"]), ("mysql", ["mysql", "mariadb"])],
)
def test_the_short_url_schemes_use_the_installed_driver(
    project: Path, servers: ServerDatabases, backend: str, schemes: list[str]
) -> None:
    """``mysql://`` asked for MySQLdb (not installed) and ``postgres://`` was not a dialect."""
    full = servers.get(backend)
    empty_tables(full)
    write_app(project, APP)
    env = {"TICKRUN_APP": "jobs:app"}
    for scheme in schemes:
        url = scheme + "://" + full.partition("://")[2]
        assert tickrun("init", cwd=project, db=url).returncode == 0
        added = tickrun(
            "enqueue", "hello", "--payload", '{"name": "a"}', cwd=project, db=url, env=env
        )
        assert added.returncode == 0, added.stderr
        listed = tickrun("due", "--json", cwd=project, db=url, env=env)
        assert listed.returncode == 0, listed.stderr
        assert int(added.stdout) in [row["id"] for row in json.loads(listed.stdout)]
        app = App(database_url=url)  # the Python API reads them alike
        app.task(name="hello")(lambda name: None)
        assert app.status(int(added.stdout)) is not None


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgresql+psycopg2://u@127.0.0.1/x", "write postgresql+psycopg:// or postgresql://"),
        ("mysql+mysqldb://u@127.0.0.1/x", "write mysql+pymysql:// or mysql://"),
    ],
)
def test_a_driver_that_is_not_installed_says_which_url_to_write(
    project: Path, url: str, hint: str
) -> None:
    result = tickrun("due", cwd=project, db=url)
    assert_error(result, 2, "database driver missing")
    assert hint in result.stderr


# -- passwords -------------------------------------------------------------------------------

ALL_COMMANDS = [
    ["init"],
    ["run"],
    ["enqueue", "hello", "--payload", '{"name": "a"}'],
    ["enqueue", "hello", "--payload", '{"name": "a"}', "--json"],
    ["enqueue", "nope"],
    ["enqueue", "hello", "--payload", "[1]"],
    ["due"],
    ["failures"],
    ["dlq"],
    ["stats"],
    ["schedules"],
    ["show", "1"],
    ["cancel", "999"],
    ["check"],
    ["doctor"],
    ["--debug", "run"],
]


def run_all(
    commands: list[list[str]], cwd: Path, db: str
) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands, a few at a time: each is mostly interpreter start-up."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(
            pool.map(
                lambda args: tickrun(*args, cwd=cwd, db=db, env={"TICKRUN_APP": "jobs:app"}),
                commands,
            )
        )


@pytest.mark.slow
def test_a_password_is_never_printed_when_the_server_is_down(project: Path) -> None:
    write_app(project, APP)
    for args, result in zip(ALL_COMMANDS, run_all(ALL_COMMANDS, project, UNREACHABLE), strict=True):
        assert result.returncode != 0, args
        assert SECRET not in result.stdout + result.stderr, args
        if args[0] != "--debug":
            assert "Traceback" not in result.stdout + result.stderr, args


@pytest.fixture
def postgres_with_password(servers: ServerDatabases) -> str:
    """The test PostgreSQL database with a password in its URL (local trust auth ignores it)."""
    url = servers.get("postgresql")
    empty_tables(url)
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


@pytest.mark.slow
def test_a_password_is_never_printed_by_a_working_database(
    project: Path, postgres_with_password: str
) -> None:
    write_app(project, APP)
    url = postgres_with_password
    # init first; then the rest at once; then a dead task to show, list and fail a run with.
    steps = [
        [["init"]],
        ALL_COMMANDS[1:],
        [["enqueue", "doomed"]],
        [["run"]],
        [["dlq"], ["show", "1"]],
    ]
    seen = {}
    for batch in steps:
        for args, result in zip(batch, run_all(batch, project, url), strict=True):
            assert SECRET not in result.stdout + result.stderr, args
            seen[" ".join(args)] = result.returncode
    assert seen["init"] == 0
    assert seen["enqueue doomed"] == 0
    assert seen["enqueue nope"] == 2
    assert seen["run"] == 1


def test_only_the_tickrun_program_freezes_its_heap_before_exiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The program skips the interpreter's shutdown collections; a caller of main()
    (a test, an embedding application) keeps a collector that sees its whole heap."""
    import gc

    from tickrun.cli import console, main

    monkeypatch.setattr(sys, "argv", ["tickrun", "--version"])
    gc.unfreeze()
    for entry in (lambda: main(["--version"]), main):
        with pytest.raises(SystemExit) as done:
            entry()
        assert done.value.code == 0
        assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as done:
            console()
        assert done.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_program_closes_its_connections_before_exiting(proj: Project) -> None:
    """Closed, not dropped at exit: the last connection to a SQLite file checkpoints the WAL
    into the database file and removes it."""
    open_engine(proj.url).dispose()  # the test's own connection would keep the WAL open
    wal = proj.dir / "tickrun.db-wal"
    for args in (["enqueue", "hello", "--payload", '{"name": "a"}'], ["run"], ["due"]):
        result = proj(*args)
        assert result.returncode == 0, result.stderr
        assert not wal.exists(), args
    with sqlite3.connect(proj.dir / "tickrun.db") as conn:
        assert conn.execute("SELECT status FROM tickrun_tasks").fetchall() == [("succeeded",)]
