"""tickrun's modules import only downwards: no import cycle, lazy imports included.

Every ``import`` in every module counts (at the top or inside a function), except those under
``if TYPE_CHECKING:``, which never run. ARCHITECTURE.md draws the same layers.

Tests share helpers through ``tests/helpers/``: no file under tests/ imports a test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "tickrun"
TESTS = ROOT / "tests"

# Lowest first; a module may import modules of its own layer or below it.
LAYERS: list[set[str]] = [
    {"errors", "clock", "backoff", "durations", "cron", "lifecycle", "failures", "output", "logs"},
    {"schema", "config", "leases", "specs", "flow", "notify"},
    {"dialects"},
    {"database", "migrations", "store", "gate", "status", "outbox"},
    {"app"},
    {"scheduler", "loader", "delivery", "wakeup"},
    {"execution"},
    {"runner"},
    {"worker"},
    {"listings", "health", "doctor", "maintenance", "activity", "metrics"},
    {"web", "web.present", "web.security", "web.gate", "web.serve", "web.app"},
    {"cli", "cli.base", "cli.core", "cli.inspect", "cli.runs", "cli.schedules", "cli.web"}
    | {"cli.monitoring", "__init__", "__main__"},
]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return name.removesuffix(".__init__")  # a subpackage (cli, web) is named as imported


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, known: set[str]) -> set[str]:
    """The tickrun modules ``path`` imports when it runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tickrun."):
                    found.add(alias.name.removeprefix("tickrun."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tickrun":
                for alias in node.names:  # `from tickrun import store` names a module
                    found.add(alias.name if alias.name in known else "__init__")
            elif node.module.startswith("tickrun."):
                base = node.module.removeprefix("tickrun.")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & known


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert set(modules()) == placed, (set(modules()) - placed, placed - set(modules()))


def test_imports_only_point_down() -> None:
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    upward = [
        f"{name} (layer {layer[name]}) imports {dep} (layer {layer[dep]})"
        for name, deps in graph().items()
        for dep in sorted(deps)
        if layer[dep] > layer[name]
    ]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def walk(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for dep in sorted(edges[name]):
            if state.get(dep) == "open":
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := walk(dep)):
                return cycle
        path.pop()
        state[name] = "done"
        return None

    for name in sorted(edges):
        if name not in state and (cycle := walk(name)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_walker_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from tickrun import store\n"
        "if TYPE_CHECKING:\n    from tickrun.app import App\n"
        "def f():\n    from tickrun.runner import Runner\n    import tickrun.cli.base\n"
    )
    assert imports(source, {"store", "app", "runner", "cli.base"}) == {
        "store",
        "runner",
        "cli.base",
    }


def imported_test_modules(path: Path) -> set[str]:
    """The ``tests.test_*`` modules ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tests.test_")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.startswith("tests.test_"):
                found.add(module)
            elif node.level == 1 and module.startswith("test_"):  # `from .test_x import ...`
                found.add(f"tests.{module}")
            elif (node.level, module) in ((0, "tests"), (1, "")):  # `from tests import test_x`
                found |= {f"tests.{a.name}" for a in node.names if a.name.startswith("test_")}
    return found


def test_no_test_module_imports_another() -> None:
    imported = {
        str(path.relative_to(ROOT)): sorted(imported_test_modules(path))
        for path in sorted(TESTS.rglob("*.py"))
    }
    offenders = {path: names for path, names in imported.items() if names}
    assert not offenders, f"move what they share into tests/helpers/: {offenders}"


def test_the_test_import_walker_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "test_m.py"
    source.write_text(
        "from tests.conftest import tickrun\n"
        "from tests.helpers.processes import wait_until\n"
        "from tests.test_a import x\n"
        "import tests.test_b\n"
        "from tests import test_c, helpers\n"
        "from .test_d import y\n"
        "def f():\n    from tests.test_e import z\n"
    )
    assert imported_test_modules(source) == {f"tests.test_{c}" for c in "abcde"}
