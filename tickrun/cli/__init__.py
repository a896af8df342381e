"""The ``tickrun`` command: parse, call the library, render. No SQL here."""

from tickrun.cli import (  # noqa: F401 - registers the commands
    core,
    inspect,
    monitoring,
    runs,
    schedules,
    web,
)
from tickrun.cli.base import cli, console, main

__all__ = ["cli", "console", "main"]
