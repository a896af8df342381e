"""Every command has help with an example, and is documented in README.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tickrun.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk(cli))


def command(path: tuple[str, ...]) -> click.Command:
    found: click.Command = cli
    for name in path:
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return found


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(p) for p in COMMANDS}
    expected = {"init", "enqueue", "run", "due", "failures", "dlq", "dlq retry", "dlq purge"}
    expected |= {"show", "stats", "schedules", "cancel", "prune", "check", "doctor"}
    assert expected <= names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    cmd = command(path)
    assert (cmd.help or "").strip(), f"tickrun {' '.join(path)} has no help text"
    assert (cmd.short_help or cmd.help or "").strip()
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"tickrun {' '.join(path)} --help shows no example"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_is_documented_in_the_readme(path: tuple[str, ...]) -> None:
    assert README.exists(), "README.md is missing"
    text = README.read_text(encoding="utf-8")
    name = "tickrun " + " ".join(path)
    assert name in text, f"README.md does not mention `{name}`"
