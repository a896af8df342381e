"""The files a deployment copies or runs as shipped: the Makefile's test target and the
systemd units."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- systemd units -----------------------------------------------------------------------------

UNITS = ROOT / "systemd"
SERVICES = ("tickrun.service", "tickrun-worker.service")


def unit_settings(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of each key (comments left out)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def installed_units(tmp_path: Path) -> Path:
    """The unit files as an operator installs them: ExecStart pointing at a real tickrun (here
    this checkout's), since `verify` checks the program exists."""
    tickrun = Path(sys.executable).parent / "tickrun"
    assert tickrun.exists(), tickrun
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/srv/myapp/.venv/bin/tickrun", str(tickrun))
        (tmp_path / unit.name).write_text(text)
    return tmp_path


def test_a_pass_that_hangs_is_stopped_and_the_services_are_hardened() -> None:
    """A handler without timeout= that hangs kept the oneshot unit active for ever (the timer
    never fired again on that host), and both services scored 8.7 EXPOSED."""
    oneshot = unit_settings("tickrun.service")
    assert oneshot["Type"] == ["oneshot"]
    start = oneshot["TimeoutStartSec"][0]
    assert start not in ("", "0", "infinity"), start
    for name in SERVICES:
        settings = unit_settings(name)
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "ProtectHome": "yes",
            "StateDirectory": "tickrun",  # writable under ProtectSystem=strict
            "CapabilityBoundingSet": "",
        }.items():
            assert settings.get(key) == [value], (name, key, settings.get(key))


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    units = installed_units(tmp_path)
    names = ["tickrun.service", "tickrun.timer", "tickrun-worker.service"]
    result = subprocess.run(
        [analyze, "verify", *names], cwd=units, capture_output=True, text=True, timeout=120
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "tickrun" in line]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_analyze_security_rates_the_services_ok(tmp_path: Path, name: str) -> None:
    analyze = systemd_analyze()
    units = installed_units(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(units / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"systemd-analyze security --offline needs systemd 250+: {result.stderr}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0 and found.group(2) == "OK", found.group(0)
