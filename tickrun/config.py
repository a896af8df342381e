"""Where each setting comes from: flag > environment > ``[tool.tickrun]`` in ./pyproject.toml >
the application's own ``database_url`` > default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tickrun.errors import ConfigError

DEFAULT_URL = "sqlite:///tickrun.db"


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # flag | environment variable NAME | pyproject.toml | application | default


def pyproject_settings(path: str = "pyproject.toml") -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    import tomllib  # only here: most cron ticks run where there is no pyproject.toml

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    section = data.get("tool", {}).get("tickrun", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.tickrun] in {path} must be a table")
    return section


def _resolve(flag: str | None, env: str, key: str) -> Setting | None:
    return resolve_setting(flag, env, key)


def resolve_setting(
    flag: str | None, env: str, key: str, allow: tuple[type, ...] = (str,)
) -> Setting | None:
    """One setting: ``flag`` > environment ``env`` > ``key`` in ``[tool.tickrun]``; None when
    none sets it. A pyproject value must be of an ``allow`` type (a list: of strings)."""
    if flag:
        return Setting(flag, "flag")
    if os.environ.get(env):
        return Setting(os.environ[env], f"environment variable {env}")
    value = pyproject_settings().get(key)
    if value is not None:
        ok = isinstance(value, allow) and not isinstance(value, bool)
        if isinstance(value, list):
            ok = list in allow and all(isinstance(v, str) for v in value)
        if not ok:
            kinds = " or ".join(
                "a list of strings" if t is list else f"a {t.__name__}" for t in allow
            )
            raise ConfigError(f"[tool.tickrun] {key} in pyproject.toml must be {kinds}")
        return Setting(value, "pyproject.toml")
    return None


def resolve_database_url(flag: str | None, app_url: str | None = None) -> Setting:
    """The database to use; ``app_url`` is the application's own ``App(database_url=...)``."""
    found = _resolve(flag, "TICKRUN_DATABASE_URL", "database_url")
    if found:
        return found
    if app_url:
        return Setting(app_url, "application")
    return Setting(DEFAULT_URL, "default")


def resolve_app_ref(flag: str | None) -> Setting | None:
    return _resolve(flag, "TICKRUN_APP", "app")
