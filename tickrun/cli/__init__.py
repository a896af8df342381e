"""The ``tickrun`` command: parse, call the library, render. No SQL here."""

from tickrun.cli import core, inspect, monitoring, schedules  # noqa: F401 - registers the commands
from tickrun.cli.base import cli, console, main

__all__ = ["cli", "console", "main"]
