"""Importing the user's application from ``MODULE:ATTR``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from tickrun.errors import ConfigError, TickrunError
from tickrun.failures import describe

if TYPE_CHECKING:
    from tickrun.app import App


def load_app(ref: str) -> App:
    """Import ``MODULE:ATTR`` (ATTR defaults to ``app``) with the working directory importable."""
    from tickrun.app import App

    module_name, _, attr = ref.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"invalid application {ref!r}: expected MODULE:ATTR, e.g. myapp.jobs:app")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except TickrunError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"cannot import application {ref!r}: no module named {exc.name!r} "
                f"(looked in {cwd} and the Python path)"
            ) from None
        raise ConfigError(f"cannot import application {ref!r}: {_one_line(exc)}") from None
    except BaseException as exc:  # noqa: BLE001 - the user's module may raise anything
        raise ConfigError(f"cannot import application {ref!r}: {_one_line(exc)}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{module_name}.{attr} is not a tickrun.App (got {type(app).__name__})")
    app.import_ref = f"{module_name}:{attr}"
    return app


def import_ref(app: App) -> str:
    """How a child process can import ``app`` again (for tasks with a ``timeout``)."""
    if app.import_ref:
        return app.import_ref
    for spec in app.tasks.values():
        module = sys.modules.get(spec.fn.__module__)
        if module is None or module.__name__ == "__main__":
            continue
        for attr, value in vars(module).items():
            if value is app:
                return f"{module.__name__}:{attr}"
    raise ConfigError(
        "tasks with a timeout run in a child process, which must import the app: "
        "load it as MODULE:ATTR (--app) or define it in an importable module"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(describe(exc)[0].split())[:500]
