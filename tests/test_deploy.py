"""The files a deployment copies or runs as shipped: the Makefile's test target and the
systemd units."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def make_recipe(target: str) -> list[str]:
    """The command lines of ``target`` in the Makefile."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_test_prints_the_reason_of_every_skip() -> None:
    [pytest_line] = [line for line in make_recipe("test") if "-m pytest" in line]
    # -r with s (or a, which includes it): the short summary lists skipped tests and why.
    flags = re.findall(r"(?:^|\s)-r(\w+)", pytest_line)
    assert any("s" in f or "a" in f for f in flags), pytest_line
