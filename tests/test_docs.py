"""Every command has help with an example, and the documentation site documents it.

The site (mkdocs.yml, docs/) is built here as `make docs` builds it, strictly: a broken link or
anchor, a page left out of the navigation or a repository file a page shows that is gone fails
the build. Its command-line reference is generated from the click commands (mkdocs-click) and
its Python reference from the docstrings (mkdocstrings); these tests read the built pages, so a
command, an option or a public name the generated pages lack fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import tickrun
from tickrun.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


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


class Sections(HTMLParser):
    """A page's text cut at its headings: heading text -> the text up to the next heading."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self._heading: list[str] | None = None
        self._current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            # The first line: mkdocstrings puts labels (dataclass, property) after the name.
            title = "".join(self._heading).replace("\N{PILCROW SIGN}", "").strip()
            title = title.splitlines()[0].strip() if title else title
            self._current = self.sections.setdefault(title, [])
            self._heading = None

    def handle_data(self, data: str) -> None:
        (self._heading if self._heading is not None else self._current).append(data)


def sections(page: Path) -> dict[str, str]:
    parser = Sections()
    parser.feed(page.read_text(encoding="utf-8"))
    return {title: "".join(text) for title, text in parser.sections.items()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built strictly into a directory of this test session."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


@pytest.fixture(scope="module")
def cli_reference(site: Path) -> dict[str, str]:
    page = site / "reference" / "cli" / "index.html"
    assert page.is_file(), "the site has no command-line reference page"
    return sections(page)


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(p) for p in COMMANDS}
    expected = {"init", "enqueue", "run", "due", "failures", "dlq", "dlq retry", "dlq purge"}
    expected |= {"show", "stats", "schedules", "cancel", "prune", "check", "doctor"}
    expected |= {"worker", "web", "runs", "metrics", "alerts", "alerts retry"}
    assert expected <= names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    cmd = command(path)
    assert (cmd.help or "").strip(), f"tickrun {' '.join(path)} has no help text"
    assert (cmd.short_help or cmd.help or "").strip()
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"tickrun {' '.join(path)} --help shows no example"


def flags(cmd: click.Command) -> list[str]:
    """Every spelling of every option the command takes (its --help shows each)."""
    return [
        opt
        for param in cmd.params
        if isinstance(param, click.Option) and not param.hidden
        for opt in (*param.opts, *param.secondary_opts)
    ]


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(("tickrun", *p)))
def test_the_cli_reference_documents_the_command_and_each_option(
    cli_reference: dict[str, str], path: tuple[str, ...]
) -> None:
    name = " ".join(("tickrun", *path))
    assert name in cli_reference, f"the CLI reference has no section for `{name}`"
    text = cli_reference[name]
    cmd = command(path)
    # The help text as Markdown renders it: `code` spans lose their backticks.
    first_line = (cmd.help or "").strip().splitlines()[0].replace("`", "")
    assert first_line in text, f"`{name}`: its help text is not in the reference"
    assert "Example:" in text, f"`{name}`: its example is not in the reference"
    for flag in flags(cmd):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"`{name}`: option {flag} is not in the reference"
        )
    for param in cmd.params:
        if isinstance(param, click.Argument):
            assert param.make_metavar(click.Context(cmd)) in text, (
                f"`{name}`: argument {param.name} is not in the reference"
            )


def test_the_cli_reference_is_generated_from_the_commands() -> None:
    """Written out by hand it would fall behind the commands: the page asks for the click
    group itself, and the test above reads what the build made of it."""
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert "::: mkdocs-click" in page
    assert ":module: tickrun.cli" in page and ":command: cli" in page


def test_the_python_reference_documents_the_public_api(site: Path) -> None:
    page = site / "reference" / "python" / "index.html"
    titles = set(sections(page))
    missing = [name for name in tickrun.__all__ if name != "__version__" and name not in titles]
    assert not missing, f"the Python API reference has no section for {missing}"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_a_guide_explains_the_command(path: tuple[str, ...]) -> None:
    """Beyond its --help: some hand-written page (a guide, an operations page) says what the
    command is for, as the README's command sections did."""
    name = "tickrun " + " ".join(path)
    pages = [p for p in DOCS.rglob("*.md") if p != DOCS / "reference" / "cli.md"]
    assert any(name in p.read_text(encoding="utf-8") for p in pages), (
        f"no page under docs/ but the generated reference mentions `{name}`"
    )


def test_the_readme_is_a_short_guide_whose_links_resolve() -> None:
    """The README is the front page of the repository: short, and every link in it leads to a
    file that exists (GitHub renders links into docs/ as the pages' sources)."""
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) < 15_000, "README.md is meant to stay under 15 KB"
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "README.md links into nothing"
    missing = [link for link in local if link and not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    """The first screen holds exactly two commands to type: the demo and the tests."""
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert text.index("```sh\n") < 1500, "the set-up commands are not on the first screen"
