"""tickrun's own entry point driven in the test process with click's CliRunner."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result
from freezegun import freeze_time

from tests.helpers.seeds import T0
from tickrun.cli.base import main


class _Main:
    """Lets CliRunner drive tickrun's own entry point: one-line errors, contract exit codes."""

    name = "tickrun"

    def main(self, args: list[str], prog_name: str, **_: Any) -> None:
        main(list(args))


def invoke(db_url: str | None, *args: str, env: dict[str, str | None] | None = None) -> Result:
    argv = (["--db", db_url] if db_url else []) + list(args)
    clean: dict[str, str | None] = {"TICKRUN_DATABASE_URL": None, "TICKRUN_APP": None}
    return CliRunner().invoke(_Main(), argv, env={**clean, **(env or {})})  # type: ignore[arg-type]


def at_t0(db_url: str | None, *args: str, **kw: Any) -> Result:
    with freeze_time(T0):
        return invoke(db_url, *args, **kw)


COMMANDS_NEEDING_SCHEMA = [
    ["due"],
    ["failures"],
    ["dlq"],
    ["dlq", "retry", "--all"],
    ["dlq", "purge"],
    ["show", "1"],
    ["stats"],
    ["cancel", "1"],
    ["prune", "--older-than", "1d"],
    ["check"],
]
